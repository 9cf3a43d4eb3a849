/*
 * strata-sandbox-helper: the two things the build sandbox needs that neither Node nor Debian 12's tools can do.
 *
 * 1. Idmapped mounts (util-linux 2.38 has no X-mount.idmap; runc 1.1 makes none itself):
 *
 *      strata-sandbox-helper mounts <userns path> <host id> <op>...
 *
 *    ops, done in order (relative paths resolve against the working directory):
 *      bind <source> <target>      clone <source> without the mounts below it (open_tree OPEN_TREE_CLONE), mark the
 *                                  clone idmapped through the user namespace (mount_setattr MOUNT_ATTR_IDMAP) and
 *                                  attach it at <target> (move_mount), which must exist and be of the same kind
 *      bind? <source> <target>     the same, but a source whose filesystem cannot be idmapped is attached without
 *                                  the idmap: the line `plain <source>` on stdout says so
 *      overlay <target> <options>  mount an overlay as the namespace's root: fsuid/fsgid <host id> (the id the
 *                                  namespace maps 0 to) with every permitted capability, so the overlay's own work
 *                                  (work dir, copy-up) goes through idmapped layers as root of the namespace
 *      host-overlay <target> <options>  mount an overlay as host root (fsuid 0)
 *      umount <target> -           detach the mount at <target> (MNT_DETACH); one that is not mounted is fine
 *
 *    Through an idmapped mount a file owned by id N on disk appears owned by the namespace's host id for N, so a
 *    process in that namespace sees N: layers keep the image's own ids on disk while steps run as unprivileged ids.
 *
 * 2. A container that dies with its builder (runc does not pass its parent's death on to the container):
 *
 *      strata-sandbox-helper supervise <runc> <runc root> <container id> <runc run args>...
 *
 *    sets a parent-death signal (SIGTERM), runs `<runc> --root <runc root> run <args>` as a child, and when the
 *    builder dies (or sends TERM/INT/HUP) kills the container with `runc kill <id> KILL`, retrying until runc has
 *    created it and exited. Exits with runc's status (128+signal when runc was killed).
 *
 * 3. A step's network namespace, prepared in one exec:
 *
 *      strata-sandbox-helper netns <host id> <id count> <slirp gid> <slirp4netns> <slirp4netns args>...
 *
 *    forks a holder that unshares a user and a network namespace, maps the user namespace's 0…<id count>-1 to
 *    <host id>…, brings the holder's loopback up and then waits (dying with this process); prints `holder <pid>` on
 *    stdout; then becomes slirp4netns (group <slirp gid>, no supplementary groups, parent-death signal KILL) with
 *    `--userns-path=/proc/<pid>/ns/user --netns-type=path`, the given args, `/proc/<pid>/ns/net eth0` (the interface
 *    name containers get from Docker and BuildKit, which build scripts name).
 *
 * Errors: `strata-sandbox-helper: <op> <path>: <error>` on stderr and exit 1; usage errors exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

struct strata_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

static int fail(const char *op, const char *path) {
  fprintf(stderr, "strata-sandbox-helper: %s %s: %s\n", op, path, strerror(errno));
  return 1;
}

/* 0 on success; 1 on failure with errno set and the failing step in *step. With `optional`, a clone that cannot be
 * idmapped is attached as it is (*plain set to 1). */
static int idmapped_bind(int userns, const char *source, const char *target, const char **step, int optional, int *plain) {
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) {
    *step = "open_tree";
    return 1;
  }
  struct strata_mount_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.attr_set = MOUNT_ATTR_IDMAP;
  attr.userns_fd = (uint64_t)userns;
  int rc = 0;
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    if (!optional || (errno != EINVAL && errno != EPERM && errno != EOPNOTSUPP)) {
      *step = "mount_setattr";
      int e = errno;
      close(tree);
      errno = e;
      return 1;
    }
    *plain = 1;
  }
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    *step = "move_mount";
    rc = 1;
  }
  int e = errno;
  close(tree);
  errno = e;
  return rc;
}

/* File system ids `id`, keeping every capability this process is permitted (changing fsuid drops some). */
static int fs_ids(unsigned id) {
  setfsgid(id);
  setfsuid(id);
  if ((unsigned)setfsuid((uid_t)-1) != id || (unsigned)setfsgid((gid_t)-1) != id) return -1;
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &header, data) != 0) return -1;
  data[0].effective = data[0].permitted;
  data[1].effective = data[1].permitted;
  return (int)syscall(SYS_capset, &header, data);
}

static int mounts(int argc, char **argv) {
  if (argc < 3) return 2;
  char *end = NULL;
  unsigned long id = strtoul(argv[1], &end, 10);
  if (!end || *end || id == 0 || id > 4294967294UL) {
    fprintf(stderr, "strata-sandbox-helper: bad host id %s\n", argv[1]);
    return 2;
  }
  int userns = -1;
  for (int i = 2; i < argc;) {
    const char *op = argv[i];
    if (i + 2 >= argc) {
      fprintf(stderr, "strata-sandbox-helper: %s needs two arguments\n", op);
      return 2;
    }
    const char *a = argv[i + 1], *b = argv[i + 2];
    i += 3;
    if (strcmp(op, "bind") == 0 || strcmp(op, "bind?") == 0) {
      if (userns < 0 && (userns = open(argv[0], O_RDONLY | O_CLOEXEC)) < 0) return fail("open", argv[0]);
      const char *step = "";
      int plain = 0;
      if (idmapped_bind(userns, a, b, &step, op[4] == '?', &plain) != 0) return fail(step, strcmp(step, "move_mount") == 0 ? b : a);
      if (plain) printf("plain %s\n", a);
    } else if (strcmp(op, "overlay") == 0 || strcmp(op, "host-overlay") == 0) {
      if (fs_ids(op[0] == 'o' ? (unsigned)id : 0) != 0) return fail("setfsuid", argv[1]);
      if (mount("overlay", a, "overlay", 0, b) != 0) return fail("mount overlay", a);
    } else if (strcmp(op, "umount") == 0) {
      if (umount2(a, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) return fail("umount", a);
    } else {
      fprintf(stderr, "strata-sandbox-helper: unknown op %s\n", op);
      return 2;
    }
  }
  fflush(stdout);
  return 0;
}

static volatile sig_atomic_t dying = 0;
static void on_signal(int sig) {
  (void)sig;
  dying = 1;
}

static void kill_container(const char *runc, const char *root, const char *id) {
  pid_t k = fork();
  if (k == 0) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
      dup2(null, 1);
      dup2(null, 2);
    }
    execl(runc, runc, "--root", root, "kill", id, "KILL", (char *)NULL);
    _exit(127);
  }
  if (k > 0) while (waitpid(k, NULL, 0) < 0 && errno == EINTR) {}
}

static int supervise(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *runc = argv[0], *root = argv[1], *id = argv[2];
  pid_t parent = getppid();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return fail("prctl", "PR_SET_PDEATHSIG");
  if (getppid() != parent) dying = 1; /* the builder died before the death signal was armed */
  pid_t child = fork();
  if (child < 0) return fail("fork", runc);
  if (child == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) _exit(127);
    int n = 0;
    args[n++] = (char *)runc;
    args[n++] = "--root";
    args[n++] = (char *)root;
    args[n++] = "run";
    for (int i = 3; i < argc; i++) args[n++] = argv[i];
    args[n] = NULL;
    execv(runc, args);
    fprintf(stderr, "strata-sandbox-helper: exec %s: %s\n", runc, strerror(errno));
    _exit(127);
  }
  int status = 0;
  for (;;) {
    if (dying) kill_container(runc, root, id);
    pid_t r = waitpid(child, &status, dying ? WNOHANG : 0);
    if (r == child) break;
    if (r < 0 && errno != EINTR) return fail("waitpid", runc);
    if (dying) {
      struct timespec t = {0, 50 * 1000 * 1000};
      nanosleep(&t, NULL);
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int e = errno;
  close(fd);
  errno = e;
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int netns(int argc, char **argv) {
  if (argc < 4) return 2;
  unsigned long id = strtoul(argv[0], NULL, 10), count = strtoul(argv[1], NULL, 10), gid = strtoul(argv[2], NULL, 10);
  if (id == 0 || count == 0 || gid == 0) return 2;
  int to_holder[2], from_holder[2];
  if (pipe2(to_holder, O_CLOEXEC) != 0 || pipe2(from_holder, O_CLOEXEC) != 0) return fail("pipe", "");
  pid_t parent = getpid();
  pid_t holder = fork();
  if (holder < 0) return fail("fork", "holder");
  if (holder == 0) {
    char c = 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      c = 'u';
      if (write(from_holder[1], &c, 1) < 0) _exit(1);
      _exit(1);
    }
    c = 'n';
    if (write(from_holder[1], &c, 1) != 1) _exit(1);
    if (read(to_holder[0], &c, 1) != 1) _exit(1); /* the maps are written */
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    c = 'l';
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) c = 'e';
    ifr.ifr_flags |= IFF_UP;
    if (c == 'l' && ioctl(s, SIOCSIFFLAGS, &ifr) != 0) c = 'e';
    if (write(from_holder[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c = 0;
  if (read(from_holder[0], &c, 1) != 1 || c != 'n') {
    errno = c == 'u' ? EPERM : EIO;
    return fail("unshare", "user+net");
  }
  char path[64], map[96];
  snprintf(map, sizeof map, "0 %lu %lu\n", id, count);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)holder);
  if (write_file(path, map) != 0) return fail("write", path);
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)holder);
  if (write_file(path, map) != 0) return fail("write", path);
  c = 'm';
  if (write(to_holder[1], &c, 1) != 1 || read(from_holder[0], &c, 1) != 1 || c != 'l') {
    errno = EIO;
    return fail("loopback up", "lo");
  }
  printf("holder %d\n", (int)holder);
  fflush(stdout);
  gid_t g = (gid_t)gid;
  if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0) return fail("setgid", argv[2]);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return fail("prctl", "PR_SET_PDEATHSIG");
  char userns[64], netpath[64];
  snprintf(userns, sizeof userns, "--userns-path=/proc/%d/ns/user", (int)holder);
  snprintf(netpath, sizeof netpath, "/proc/%d/ns/net", (int)holder);
  char **args = calloc((size_t)argc + 6, sizeof *args);
  if (!args) return fail("calloc", "");
  int n = 0;
  args[n++] = argv[3];
  args[n++] = userns;
  args[n++] = "--netns-type=path";
  for (int i = 4; i < argc; i++) args[n++] = argv[i];
  args[n++] = netpath;
  args[n++] = "eth0"; /* as a Docker or BuildKit container names its interface */
  args[n] = NULL;
  execv(argv[3], args);
  return fail("exec", argv[3]);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "mounts") == 0) {
    int rc = mounts(argc - 2, argv + 2);
    if (rc == 2) fprintf(stderr, "usage: strata-sandbox-helper mounts <userns path> <host id> (bind|bind? <src> <dst> | overlay|host-overlay <target> <options> | umount <target> -)...\n");
    return rc;
  }
  if (argc >= 2 && strcmp(argv[1], "supervise") == 0) {
    int rc = supervise(argc - 2, argv + 2);
    if (rc == 2) fprintf(stderr, "usage: strata-sandbox-helper supervise <runc> <runc root> <container id> <runc run args>...\n");
    return rc;
  }
  if (argc >= 2 && strcmp(argv[1], "netns") == 0) {
    int rc = netns(argc - 2, argv + 2);
    if (rc == 2) fprintf(stderr, "usage: strata-sandbox-helper netns <host id> <id count> <slirp gid> <slirp4netns> <args>...\n");
    return rc;
  }
  fprintf(stderr, "usage: strata-sandbox-helper mounts ... | supervise ... | netns ...\n");
  return 2;
}
