"""Jobs that wire the layers together: methods that assemble AlignedModels, fitting, quickstart."""
