// A device worker under test, as its own process: moss-blk, moss-vsock, moss-null or any
// other backend program (qemu-storage-daemon too). Each start gets a fresh directory for the
// worker's sockets and its log; the process is stopped by its pid (SIGTERM, then SIGKILL)
// when the object goes, and dies with the test process if that crashes (PR_SET_PDEATHSIG),
// so no worker outlives its test.
//
// A moss worker takes the command line every worker shares (vhost-user/backend_cli.h):
// `--socket-path PATH` or `--fd 3` (a connected socket, as the broker gives it), and
// `--control-fd 4` (a SOCK_SEQPACKET control socket, ipc/worker.capnp). start() builds that
// part; a device adds only its own options:
//
//   WorkerOptions o;
//   o.pass_fd = true;
//   auto w = WorkerProcess::start("moss-null", {"--capacity", "1048576"}, o);
//   auto g = Guest::adopt((*w)->take_connection());
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss::harness {

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

// What every moss worker's command line offers (see the top of this file).
struct WorkerOptions {
  bool pass_fd = false;  // Serve one connected socket passed as --fd 3 instead of a listening one.
  bool control = false;  // A control socket as --control-fd 4, as the broker gives.
  std::vector<std::string> extra_args;  // Appended last (tests of bad command lines).
};

class WorkerProcess {
 public:
  // Where `program` (e.g. "moss-blk") is: $MOSS_<PROGRAM> (upper case, '-' as '_', without
  // the "moss-": $MOSS_BLK), else $MOSS_BUILD_DIR/program, else beside this test binary.
  static std::string binary_path(const std::string& program);
  // Why `path` cannot run here, or nullopt if it can.
  static std::optional<std::string> unavailable(const std::string& path);

  // Starts the moss worker `program` (found by binary_path) with the device's own options
  // and the shared ones from `options`, and waits until its socket exists (with pass_fd, at
  // once). Error if the binary is missing, or the process exits or creates no socket within
  // `timeout`; the message has its log.
  static Result<std::unique_ptr<WorkerProcess>> start(const std::string& program, const std::vector<std::string>& device_args,
                                                      const WorkerOptions& options = {},
                                                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  virtual ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  const std::string& name() const { return name_; }  // "moss-blk", for messages.
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_.path(); }
  // The vhost-user socket the worker listens on (unless pass_fd).
  const std::string& socket_path() const { return socket_; }
  // With pass_fd: our end of the connected socket the worker serves (Guest::adopt it).
  UniqueFd take_connection() { return std::move(connection_); }
  // With control: our end of the worker's control socket (ipc/worker.capnp).
  int control_fd() const { return control_.get(); }
  void close_control() { control_.reset(); }

  // Running, not a zombie. Reaps the process if it has exited (exit_status() says how).
  bool alive();
  // Wait status once reaped (see alive(), wait_exit(), stop(), kill9()).
  std::optional<int> exit_status() const { return status_; }
  // Waits up to `limit` for the process to end; its wait status, or nullopt if it runs on.
  std::optional<int> wait_exit(std::chrono::milliseconds limit);
  // SIGTERM, then SIGKILL after `grace`; returns the wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(3));
  // SIGKILL and reap.
  int kill9();
  std::string log() const;
  // "exited with status N" / "was killed by signal N (SIGABRT)" / "is running".
  std::string describe() const;

 protected:
  WorkerProcess(std::string name, TempDir dir);

  // The shared part of a moss worker's command line (--socket-path or --fd, --control-fd),
  // making the sockets it names; spawn() hands the child its ends.
  Result<std::vector<std::string>> common_args(const WorkerOptions& options);
  // Forks and execs `argv` (argv[0] is the binary) with stdin /dev/null, stdout and stderr
  // to the log, and the fds common_args() made at their numbers.
  Result<void> spawn(std::vector<std::string> argv);
  // Waits until every path in `paths` is a socket; Error if the process ends first or
  // `timeout` passes, with its log.
  Result<void> wait_for_sockets(const std::vector<std::string>& paths, std::chrono::milliseconds timeout);

 private:
  bool reap(bool block);

  std::string name_;
  TempDir dir_;
  std::string socket_, log_path_;
  UniqueFd connection_, control_;
  // The child's ends, to be dup2'd to these numbers in the child; closed here after spawn.
  std::vector<std::pair<int, UniqueFd>> child_fds_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// utime + stime of a process, from /proc/PID/stat, in seconds; nullopt if it is gone.
std::optional<double> process_cpu_seconds(pid_t pid);

}  // namespace moss::harness
