"""The generation tasks one MAGVLT model covers, registered like any plugin's."""
