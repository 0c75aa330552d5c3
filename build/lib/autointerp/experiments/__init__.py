"""Act: experiments on a feature's explanation and the revision they lead to.

`proposals` holds what the proposer is asked and how its answers and the measurements are judged;
`kinds` the experiment kinds (a registry); `rounds` one round of experiments and revision.
"""
