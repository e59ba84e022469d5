"""The plumbing every stage stands on: files written atomically and logs (:mod:`.io`), checkpoints
(:mod:`.checkpoint`), several processes (:mod:`.distributed`), fault injection for crash tests
(:mod:`.faults`), the optimizer (:mod:`.optim`) and oneDNN-packed weights for sampling on a CPU
(:mod:`.packing`)."""
