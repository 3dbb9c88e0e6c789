"""Planners: pure decisions over a ConvSpec (or channel counts and offsets) and a Target, shared by
every emitter and tested without any IR. One module per planner family; ``cost`` holds every cost
constant they choose by, ``limits`` the blow-up guards."""
