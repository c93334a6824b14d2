"""A module that exists but cannot be imported (its own dependency is missing): naming a class in
it must report the missing dependency, not "no such module"."""

import poisonbench_no_such_dependency  # noqa: F401
