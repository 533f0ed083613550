"""The examples of docs/extending.md: a new inverter, selector, meta-update and recipe.

Importing a module registers its part; ``import extending.best_of_recipe`` (with ``examples/`` on
``sys.path``) registers all four. tests/test_extending.py runs each on the toy world.
"""
