"""Other libraries' private parts that regexp uses, one module per library, so that an upgrade
that breaks one breaks it here, where tests/test_adapters.py fails loudly, and nowhere else.
pyproject.toml bounds each library to the releases those tests passed with."""
