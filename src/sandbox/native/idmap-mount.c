/*
 * strata-idmap-mount: makes idmapped copies of mounts, for the build sandbox's user namespace.
 *
 *   strata-idmap-mount <userns path> <source> <target> [<source> <target> ...]
 *
 * For each pair: clones the mount tree at <source> (open_tree OPEN_TREE_CLONE|AT_RECURSIVE), marks the clone idmapped
 * through the user namespace at <userns path> (mount_setattr MOUNT_ATTR_IDMAP), and attaches it at <target>
 * (move_mount), which must exist and be of the same kind (directory or file). Through the clone a file owned by id N
 * on disk appears owned by the namespace's host id for N, so a process in that namespace sees N: files keep the image's
 * own ids on disk while the step runs as unprivileged host ids. Util-linux 2.38 (Debian 12) has no CLI for this
 * (X-mount.idmap arrived in 2.39) and runc 1.1 does not make idmapped mounts itself.
 *
 * Exit 0 when every pair is mounted; otherwise prints `strata-idmap-mount: <step> <path>: <error>` and exits 1 after
 * undoing nothing (the caller unmounts its targets).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
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
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct strata_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

static int fail(const char *step, const char *path) {
  fprintf(stderr, "strata-idmap-mount: %s %s: %s\n", step, path, strerror(errno));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 4 || (argc - 2) % 2 != 0) {
    fprintf(stderr, "usage: strata-idmap-mount <userns path> <source> <target> [<source> <target> ...]\n");
    return 2;
  }
  int userns = open(argv[1], O_RDONLY | O_CLOEXEC);
  if (userns < 0) return fail("open", argv[1]);
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *source = argv[i], *target = argv[i + 1];
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) return fail("open_tree", source);
    struct strata_mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = (uint64_t)userns;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) return fail("mount_setattr", source);
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) return fail("move_mount", target);
    close(tree);
  }
  return 0;
}
