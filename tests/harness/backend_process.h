// A vhost-user-blk backend under test, as its own process: moss's worker (moss-blk) or
// qemu-storage-daemon's vhost-user-blk export. Each start gets a fresh directory with the
// socket and the process's log; the process is stopped by its pid (SIGTERM, then SIGKILL)
// when the object goes, and dies with the test process if that crashes (PR_SET_PDEATHSIG),
// so no backend outlives its test.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss::harness {

enum class BackendKind { kMossBlk, kQsd };
const char* backend_name(BackendKind kind);  // "moss-blk", "qemu-storage-daemon"

struct BackendOptions {
  BackendKind kind = BackendKind::kMossBlk;
  std::string disk;            // The image file; ignored with null_bytes.
  bool readonly = false;
  uint32_t num_queues = 1;
  bool direct = false;         // O_DIRECT on the image (qsd: cache.direct=on; moss-blk opens it that way).
  bool io_uring = false;       // qsd only: aio=io_uring instead of its thread pool.
  bool locking = true;         // qsd only: false gives locking=off, for peers that take turns on
                               // one image that moss-blk holds locked (one writer per disk).
  uint64_t null_bytes = 0;     // qsd only: export a null-co device of this size instead.
  bool pass_fd = false;        // moss-blk only: serve one connected socket passed as --fd.
  bool control = false;        // moss-blk only: a SOCK_SEQPACKET control socket as --control-fd, as the broker gives.
  std::vector<std::string> extra_args;
};

class TempDir {
 public:
  // Under $TMPDIR (or /tmp) unless `parent` is given.
  static Result<TempDir> create(const std::string& parent = "");
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

class BackendProcess {
 public:
  // Starts the backend and waits until its socket exists (connecting may still need a retry
  // while it reaches listen(): Guest::connect does that); with pass_fd, returns at once. Error
  // if the binary is missing, or
  // the process exits or creates no socket within `timeout`; the message has its log.
  static Result<std::unique_ptr<BackendProcess>> start(const BackendOptions& options,
                                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~BackendProcess();
  BackendProcess(const BackendProcess&) = delete;
  BackendProcess& operator=(const BackendProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_; }
  // With pass_fd: our end of the connected socket the backend serves (Guest::adopt it).
  UniqueFd take_connection() { return std::move(connection_); }
  // With control: our end of the worker's control socket (ipc/worker.capnp; worker::call).
  int control_fd() const { return control_.get(); }
  void close_control() { control_.reset(); }
  const BackendOptions& options() const { return options_; }
  // Running, not a zombie. Reaps the process if it has exited (exit_status() says how).
  bool alive();
  // Wait status once reaped (see alive(), stop(), kill9()).
  std::optional<int> exit_status() const { return status_; }
  // SIGTERM, then SIGKILL after `grace`; returns the wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(3));
  // SIGKILL and reap.
  int kill9();
  std::string log() const;
  // "exited with status N" / "was killed by signal N (SIGABRT)" / "is running".
  std::string describe() const;

  // Where moss-blk is: $MOSS_BLK, else $MOSS_BUILD_DIR/moss-blk, else beside this binary.
  static std::string moss_blk_path();
  static std::string qsd_path();  // /usr/bin/qemu-storage-daemon
  // Why `kind` cannot run here, or nullopt if it can.
  static std::optional<std::string> unavailable(BackendKind kind);

 private:
  BackendProcess(const BackendOptions& options, TempDir dir);
  bool reap(bool block);

  BackendOptions options_;
  TempDir dir_;
  std::string socket_, log_path_;
  UniqueFd connection_;
  UniqueFd control_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// utime + stime of a process, from /proc/PID/stat, in seconds; nullopt if it is gone.
std::optional<double> process_cpu_seconds(pid_t pid);

}  // namespace moss::harness
