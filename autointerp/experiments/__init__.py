"""Act: experiments on a feature's explanation and the revision they lead to.

`proposals` holds what the proposer is asked and how its answers and the measurements are judged;
`context` what a kind gets (the feature, the subject, the explanation, a proposer); `kinds` the
experiment kinds (a registry); `rounds` one round of experiments and revision.
"""
