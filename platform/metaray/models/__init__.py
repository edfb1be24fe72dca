"""Meta-policy RLModules: memory cores (:mod:`.cores`, torch only) and the policy module
(:mod:`.policy`, RLlib); import each from its module, so validating a core needs no RLlib."""
