// One disk, one writer: advisory locks on a disk image or block device, compatible with
// QEMU's, so that two moss runs (or moss-blk workers), or moss and QEMU, never write one disk
// at the same time.
//
// The locks are open file description (OFD) locks (fcntl F_OFD_SETLK): they belong to the open
// file, not the process, so a disk fd the broker locks and passes to its jailed worker stays
// locked for as long as the worker holds it, and the lock goes when the last fd is closed
// (however the process ends). Two opens of one file conflict even within one process. A
// process killed with I/O in flight keeps the lock a little past its death, until the kernel
// has finished that I/O: a replacement waits for it rather than write alongside.
//
//   writable disk   an exclusive (F_WRLCK) lock on the whole file: it conflicts with any lock
//                   anyone else holds on it (another moss, QEMU, a whole-file lock of any
//                   program), and every later one conflicts with it.
//   read-only disk  shared (F_RDLCK) locks on the bytes QEMU (7.2, block/file-posix.c) uses
//                   for the same purpose: 100 ("consistent read" held), 201 and 203 (writes
//                   and resizes not shared); then the bytes that say someone else writes
//                   (101), resizes (103) or does not share reads (200) must be free. Readers
//                   share; a writer (moss or QEMU) excludes them and is excluded by them.
//
// The kernel keeps the locks; nothing here stores state.
#pragma once

#include <string>

#include "base/result.h"

namespace moss {

// Locks the open disk `fd` (a regular file or block device) as above. `what` names it in the
// error ("the disk /x.img"), which says another process uses it. A file system without
// locks (ENOLCK, EOPNOTSUPP) is logged and let through: the locks are advisory.
Result<void> lock_disk(int fd, bool read_only, const std::string& what);

}  // namespace moss
