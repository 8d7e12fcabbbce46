"""Jobs that wire the layers together: fit, extend, quickstart, evaluate on raw data, encoder upgrade."""
