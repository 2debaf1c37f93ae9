"""Glue for training frameworks; each submodule imports its framework, the core never does."""


def missing_extra(module: str, extra: str, error: ImportError) -> ImportError:
    """The error an integration raises when its framework is not installed.

    Example:
        >>> print(missing_extra("solo", "solo", ImportError("No module named 'omegaconf'")))
        equimod_plugin.integrations.solo needs omegaconf: pip install 'equimod-plugin[solo]'
    """
    name = getattr(error, "name", None) or str(error).rpartition(" ")[2].strip("'")
    return ImportError(
        f"equimod_plugin.integrations.{module} needs {name}: pip install 'equimod-plugin[{extra}]'"
    )
