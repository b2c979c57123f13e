/* kubesim-net: an LD_PRELOAD shim that gives every sandboxed pod its own loopback
 * address in the host's network namespace.
 *
 * bind() to 0.0.0.0, 127.0.0.1, :: or ::1 binds the pod IP ($KUBESIM_POD_IP)
 * instead, so two pods listening on 0.0.0.0:8080 do not collide. An IPv6 wildcard
 * bind on a V6ONLY socket fails with EADDRNOTAVAIL (the pod has no IPv6 address).
 * connect() to 127.0.0.1 (or ::1 on a dual-stack socket) goes to the pod IP too, so
 * "localhost" is the pod itself, except for the ports in $KUBESIM_HOST_PORTS
 * (comma-separated; the API server's), which stay on the host's 127.0.0.1.
 * Built by testenv with `cc -shared -fPIC`. Statically linked programs (Go) bypass it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct in_addr pod_ip;
static int have_pod_ip;
static unsigned short host_ports[16];
static int n_host_ports;

__attribute__((constructor)) static void kubesim_net_init(void) {
    const char *ip = getenv("KUBESIM_POD_IP");
    if (ip && inet_pton(AF_INET, ip, &pod_ip) == 1)
        have_pod_ip = 1;
    const char *ports = getenv("KUBESIM_HOST_PORTS");
    while (ports && *ports && n_host_ports < 16) {
        char *end;
        long port = strtol(ports, &end, 10);
        if (end == ports)
            break;
        if (port > 0 && port < 65536)
            host_ports[n_host_ports++] = (unsigned short)port;
        ports = *end == ',' ? end + 1 : end;
    }
}

static int is_host_port(unsigned short port) {
    for (int i = 0; i < n_host_ports; i++)
        if (host_ports[i] == port)
            return 1;
    return 0;
}

/* 0.0.0.0 or 127.0.0.1 (with_any: also the wildcard). */
static int local4(struct in_addr a, int with_any) {
    uint32_t h = ntohl(a.s_addr);
    return h == 0x7f000001 || (with_any && h == 0);
}

static int local6(const struct in6_addr *a, int with_any) {
    if (IN6_IS_ADDR_LOOPBACK(a) || (with_any && IN6_IS_ADDR_UNSPECIFIED(a)))
        return 1;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        struct in_addr v4;
        memcpy(&v4, &a->s6_addr[12], 4);
        return local4(v4, with_any);
    }
    return 0;
}

static int v6only(int fd) {
    int only = 0;
    socklen_t len = sizeof only;
    if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, &len) != 0)
        return 1;
    return only;
}

/* Rewrites addr into out when it is local; returns 1 if rewritten, -1 to fail with
 * EADDRNOTAVAIL, 0 to leave it alone. */
static int rewrite(int fd, const struct sockaddr *addr, socklen_t len, int is_bind,
                   struct sockaddr_storage *out) {
    if (!have_pod_ip || !addr)
        return 0;
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (!local4(a.sin_addr, is_bind))
            return 0;
        if (!is_bind && is_host_port(ntohs(a.sin_port)))
            return 0;
        a.sin_addr = pod_ip;
        memcpy(out, &a, sizeof a);
        return 1;
    }
    if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (!local6(&a.sin6_addr, is_bind))
            return 0;
        if (!is_bind && is_host_port(ntohs(a.sin6_port)))
            return 0;
        if (v6only(fd))
            return is_bind ? -1 : 0;
        memset(&a.sin6_addr, 0, sizeof a.sin6_addr);
        a.sin6_addr.s6_addr[10] = 0xff;
        a.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&a.sin6_addr.s6_addr[12], &pod_ip, 4);
        memcpy(out, &a, sizeof a);
        return 1;
    }
    return 0;
}

typedef int (*sock_fn)(int, const struct sockaddr *, socklen_t);

static int call(const char *name, sock_fn *slot, int fd, const struct sockaddr *addr,
                socklen_t len, int is_bind) {
    if (!*slot)
        *slot = (sock_fn)dlsym(RTLD_NEXT, name);
    if (!*slot) {
        errno = ENOSYS;
        return -1;
    }
    struct sockaddr_storage moved;
    switch (rewrite(fd, addr, len, is_bind, &moved)) {
    case 1:
        return (*slot)(fd, (struct sockaddr *)&moved, len);
    case -1:
        errno = EADDRNOTAVAIL;
        return -1;
    default:
        return (*slot)(fd, addr, len);
    }
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static sock_fn real;
    return call("bind", &real, fd, addr, len, 1);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static sock_fn real;
    return call("connect", &real, fd, addr, len, 0);
}
