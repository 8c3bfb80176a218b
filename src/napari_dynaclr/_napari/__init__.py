"""The napari plugin: npe2 contributions, the explorer session, worker glue and the docks."""
