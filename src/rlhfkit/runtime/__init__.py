"""The plumbing every stage stands on: files written atomically and logs (:mod:`.io`), checkpoints
(:mod:`.checkpoint`), several processes (:mod:`.distributed`), fault injection for crash tests
(:mod:`.faults`) and the optimizer (:mod:`.optim`)."""
