"""Instructions (DESIGN §5): templates as data, text sanitising, rendering, token budgets, the prompts job."""
