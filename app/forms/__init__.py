"""WTForms form classes, one module per feature."""
