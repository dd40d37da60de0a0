"""Pure tensor losses (no transformers, no accelerate): pairwise (reward models), preference
(DPO family), unpaired (KTO), each with its paper and equation in its docstring."""
