"""Plain helper functions and constants that the tests share.

Test modules and conftest files import these from here (``from tests.helpers.app import
new_app``); they never import from one another. Fixtures stay in the conftest files (a
fixture may call a helper from here). tests/test_habits.py holds that rule.
"""
