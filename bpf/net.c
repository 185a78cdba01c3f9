/* Network family: bytes and packets per cgroup, direction and peer class (cgroup_skb).
 *
 * Attached to the cgroup v2 root, these programs see every socket's traffic on the node:
 * cgroup_skb runs the effective programs of the socket's cgroup, and the root's are inherited
 * by all. bpf_skb_cgroup_id() is the socket's cgroup, which is right on ingress too, where the
 * program runs in softirq context and the current task is unrelated. Only IP packets of
 * sockets reach these hooks; the data starts at the IP header.
 *
 * Bytes are IP bytes as the socket layer hands them over (skb->len): headers once per skb.
 * With GSO one skb is several wire packets; gso_segs says how many.
 *
 * The peer (destination on egress, source on ingress) is classed with an LPM trie the agent
 * fills from its configured CIDRs; IPv4 addresses are looked up as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one trie serves both families.
 */

#define ETH_P_IP_BE 0x0008    /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86  /* htons(0x86DD) */

enum peer_class { CLASS_POD = 0, CLASS_CLUSTER = 1, CLASS_INTERNET = 2, CLASS_OTHER = 3 };

struct net_key {
    u64 cgroup_id;
    u8 direction;  /* 0 transmit, 1 receive */
    u8 peer_class;
    u8 pad[6];
};

struct net_val {
    u64 bytes;
    u64 packets;
};

struct lpm_key {
    u32 prefixlen;
    u8 addr[16];
};

BPF_TABLE("lru_percpu_hash", struct net_key, struct net_val, net_traffic, MAX_CGROUPS);
BPF_LPM_TRIE(peer_classes, struct lpm_key, u8, MAX_CIDRS);

static __always_inline u8 classify_peer(struct __sk_buff *skb, int egress)
{
    struct lpm_key k = {.prefixlen = 128};
    if (skb->protocol == ETH_P_IP_BE) {
        /* IPv4 header: saddr at 12, daddr at 16. */
        if (bpf_skb_load_bytes(skb, egress ? 16 : 12, &k.addr[12], 4) != 0)
            return CLASS_OTHER;
        k.addr[10] = 0xff;
        k.addr[11] = 0xff;
    } else if (skb->protocol == ETH_P_IPV6_BE) {
        /* IPv6 header: saddr at 8, daddr at 24. */
        if (bpf_skb_load_bytes(skb, egress ? 24 : 8, &k.addr[0], 16) != 0)
            return CLASS_OTHER;
    } else {
        return CLASS_OTHER;
    }
    u8 *c = peer_classes.lookup(&k);
    return c ? *c : CLASS_INTERNET;
}

static __always_inline int count(struct __sk_buff *skb, int egress)
{
    struct net_key key = {};
    key.cgroup_id = bpf_skb_cgroup_id(skb);
    key.direction = egress ? 0 : 1;
    key.peer_class = classify_peer(skb, egress);

    u64 segs = skb->gso_segs;
    if (segs == 0)
        segs = 1;
    struct net_val *v = net_traffic.lookup(&key);
    if (v) {
        v->bytes += skb->len;  /* this CPU's slot */
        v->packets += segs;
    } else {
        struct net_val fresh = {.bytes = skb->len, .packets = segs};
        if (net_traffic.update(&key, &fresh) != 0)
            count_failure(FAIL_NET);
    }
    return 1;  /* observe only: always let the packet through */
}

int net_egress(struct __sk_buff *skb)
{
    return count(skb, 1);
}

int net_ingress(struct __sk_buff *skb)
{
    return count(skb, 0);
}
