"""Pure curation stages `DataFrame -> DataFrame`, each with a frozen dataclass of parameters."""
