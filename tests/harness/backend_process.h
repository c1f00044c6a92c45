// A vhost-user-blk backend under test, as its own process (a WorkerProcess, which says how it
// is started and stopped): moss's worker (moss-blk) or qemu-storage-daemon's vhost-user-blk
// export.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "tests/harness/worker_process.h"

namespace moss::harness {

enum class BackendKind { kMossBlk, kQsd };
const char* backend_name(BackendKind kind);  // "moss-blk", "qemu-storage-daemon"

// With the shared worker options (WorkerOptions: pass_fd, control, extra_args), which
// qemu-storage-daemon ignores but for extra_args.
struct BackendOptions : WorkerOptions {
  BackendKind kind = BackendKind::kMossBlk;
  std::string disk;            // The image file; ignored with null_bytes.
  bool readonly = false;
  uint32_t num_queues = 1;
  bool direct = false;         // O_DIRECT on the image (qsd: cache.direct=on; moss-blk opens it that way).
  bool io_uring = false;       // qsd only: aio=io_uring instead of its thread pool.
  bool locking = true;         // qsd only: false gives locking=off, for peers that take turns on
                               // one image that moss-blk holds locked (one writer per disk).
  uint64_t null_bytes = 0;     // qsd only: export a null-co device of this size instead.
};

class BackendProcess : public WorkerProcess {
 public:
  // Starts the backend and waits until its socket exists (connecting may still need a retry
  // while it reaches listen(): Guest::connect does that); with pass_fd, returns at once. Error
  // if the binary is missing, or
  // the process exits or creates no socket within `timeout`; the message has its log.
  static Result<std::unique_ptr<BackendProcess>> start(const BackendOptions& options,
                                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const BackendOptions& options() const { return options_; }

  // Where moss-blk is: $MOSS_BLK, else $MOSS_BUILD_DIR/moss-blk, else beside this binary.
  static std::string moss_blk_path();
  static std::string qsd_path();  // /usr/bin/qemu-storage-daemon
  // Why `kind` cannot run here, or nullopt if it can.
  static std::optional<std::string> unavailable(BackendKind kind);

 private:
  BackendProcess(const BackendOptions& options, TempDir dir);

  BackendOptions options_;
};

}  // namespace moss::harness
