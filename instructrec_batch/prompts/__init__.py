"""Instructions: templates as data, text sanitising, rendering, token budgets, the prompts job."""
