"""Pod and node metadata for the cgroup → pod join, behind one small interface.

source.py      MetadataSource (the Protocol) and SourceStatus
select.py      select_source(): which source, and one log line saying why
informer.py    KubernetesSource: list+watch this node's pods, grace cache for deleted ones
static.py      StaticSource: a YAML file (demo, clusterless tests); write_static()
cgroup_only.py CgroupOnlySource: nothing beyond the cgroup path
convert.py     V1Pod/V1Node → PodMeta/NodeMeta, pure
apiconfig.py   in-cluster or kubeconfig → ApiClient, errors as ConfigError
"""
