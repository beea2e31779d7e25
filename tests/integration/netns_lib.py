"""Separate hosts for the cluster tests: each node runs in a network
namespace of its own (a veth pair to a bridge in a namespace of the
test's, address 10.99.0.N/24 inside the namespaces only, so none of this
traffic leaves them) and in a mount namespace of its own (ip netns exec
makes one; unshare --propagation private keeps its mounts from everyone
else), so the nodes share no address and no mount table. Their FUSE
mounts exist only in their namespace: the test reaches a mount through
/proc/PID/root and checks it in /proc/PID/mountinfo. Images and control
sockets are files in the scratch directory, as on separate hosts with a
shared disk of test fixtures. The bridge namespace holds 10.99.0.254 for
relays (relay_lib.Relay(netns=net.bridge)). Namespaces are deleted at
exit, also on failure."""
import atexit
import os
import signal
import subprocess

from cluster_lib import RESYNCD, Cluster, check, fail, wait_for  # noqa: F401

BRIDGE_ADDR = "10.99.0.254"
PORT = 7000


def ip(*args, check_rc=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check_rc and r.returncode != 0:
        fail("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


class Net:
    """A bridge namespace and one namespace per host."""

    def __init__(self, hosts):
        tag = "rs%d" % os.getpid()
        self.bridge = tag + "-br"
        self.ns = {}
        self.addr = {}
        atexit.register(self.cleanup)
        ip("netns", "add", self.bridge)
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "addr", "add", BRIDGE_ADDR + "/24", "dev", "br0")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        ip("-n", self.bridge, "link", "set", "lo", "up")
        for i, h in enumerate(hosts):
            ns = "%s-%s" % (tag, h)
            addr = "10.99.0.%d" % (i + 1)
            ip("netns", "add", ns)
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "p%d" % i,
               "netns", self.bridge)
            ip("-n", self.bridge, "link", "set", "p%d" % i, "master", "br0", "up")
            ip("-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            self.ns[h], self.addr[h] = ns, addr

    def cleanup(self):
        for ns in list(self.ns.values()) + [self.bridge]:
            # Anything still running in a namespace of ours goes first.
            r = ip("netns", "pids", ns, check_rc=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            ip("netns", "del", ns, check_rc=False)
        self.ns = {}


class NetnsCluster(Cluster):
    """cluster_lib.Cluster with each node a separate host of net. Peers
    (and resyncctl, over the control socket) reach node n at
    peer_address(n): its own address unless a test reroutes it."""

    def __init__(self, sc, tag, names, primary, size, net, extra=""):
        super().__init__(sc, tag, names, primary, size=size)
        self.net = net
        with open(self.conf) as f:
            lines = f.read().splitlines()
        node = None
        for i, x in enumerate(lines):
            if x.startswith("[node "):
                node = x[6:-1]
            elif x.startswith("address = "):
                lines[i] = "address = %s:%d" % (net.addr[node], PORT)
            elif x.startswith("block_size") and extra:
                lines[i] = x + "\n" + extra.strip()
        self.text = "\n".join(lines) + "\n"
        with open(self.conf, "w") as f:
            f.write(self.text)
        self.own_conf = self.conf
        self.pids = {}

    def reroute(self, addresses):
        """A config in which the nodes of addresses {name: "host:port"} are
        reached there (a relay); the daemons other than those nodes, and
        resyncctl, use it from their next start on."""
        text = self.text
        for n, a in addresses.items():
            text = text.replace("address = %s:%d" % (self.net.addr[n], PORT), "address = " + a)
        path = self.sc.path(self.tag + "-via.conf")
        with open(path, "w") as f:
            f.write(text)
        self.via = (path, set(addresses))
        self.conf = path

    def conf_for(self, n):
        via = getattr(self, "via", None)
        return self.own_conf if via and n in via[1] else self.conf

    def file(self, n):
        return "/proc/%d/root%s/volume" % (self.pids[n], os.path.realpath(self.mount(n)))

    def mounted(self, n):
        try:
            with open("/proc/%d/mountinfo" % self.pids[n]) as f:
                return any(line.split()[4] == os.path.realpath(self.mount(n)) for line in f)
        except OSError:
            return False

    def start(self, n, env=None):
        log = open(self.sc.path("%s-%s.log" % (self.tag, n)), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.net.ns[n],
                              "unshare", "--mount", "--propagation", "private",
                              RESYNCD, "--config", self.conf_for(n), "--node", n,
                              "--foreground"],
                             stdout=log, stderr=log,
                             env=dict(os.environ, **env) if env else None)
        self.procs[n] = p
        self.pids[n] = p.pid  # ip and unshare exec, without a fork

        self.wait_up(n, p, "resyncd %s up in %s" % (n, self.net.ns[n]))
        with open("/proc/%d/comm" % p.pid) as f:
            check(f.read().strip() == "resyncd", "the pid of %s is resyncd's" % n)

    def stop(self, n):
        p = self.procs.pop(n)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        check(rc == 0, "resyncd %s stopped cleanly (exit %d): %s" % (n, rc, self.log(n)))

    def kill_and_unmount(self):
        # A mount namespace goes with its last process, and its mounts.
        for n, p in list(self.procs.items()):
            p.kill()
            p.wait()
        self.procs = {}


def in_ns_main_table(path):
    """Whether path is a mount point in the test's own mount table."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
