"""Example graphs that use cl_plugin: the multi-agent MCTS system, simulated traffic, maintenance."""
