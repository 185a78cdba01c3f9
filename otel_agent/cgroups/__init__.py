"""The cgroup v2 source: where pods' cgroups are and what their stat files say.

mount      where the v2 hierarchy is mounted, which controllers it offers
layout     what a cgroup path means in kubelet's layout (pure; also for BPF-learnt paths)
discovery  find the node, kubepods, pod and container cgroups on disk, with their ids
parsers    stat file formats (pure)
reader     read those files every cycle through kept descriptors into Samples
"""
