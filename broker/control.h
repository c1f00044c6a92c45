// Named VMs: the per-VM control socket behind `moss run --name N`, and the client side of
// `moss ls`, `moss stats N` and `moss stop N`.
//
// Each named VM holds, in the runtime directory, N.lock (flock'ed for the VM's lifetime: the
// one source of truth for "N is running") and N.sock (a SOCK_SEQPACKET listener speaking
// ipc/control.capnp). A crashed run leaves both files behind with no lock held; the next
// claim of the name notices and removes them. Claims cannot race: the lock is taken before
// anything else, and a lock file unlinked by its previous owner is detected and retried.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "broker/private_dir.h"

namespace moss::control {

// 1-64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit (so a
// name is always one safe path component).
Result<void> check_name(const std::string& name);

// $MOSS_RUNTIME_DIR, else $XDG_RUNTIME_DIR/moss, else /run/moss for root (when /run is
// writable), else /tmp/moss-UID.
std::string runtime_dir();
// Opens the runtime directory at `path` (made 0700 if missing and `create`) as privdir::Dir
// does: it must be this user's own directory, mode 0700, and not a symlink; everything in it
// is then reached through the fd. A refusal says how to use another one ($MOSS_RUNTIME_DIR);
// a missing one without `create` is an Error with err == ENOENT.
Result<privdir::Dir> open_runtime_dir(const std::string& path, bool create);

class Endpoint {
 public:
  // Takes the name in the runtime directory `dir` (created 0700 if missing; see
  // open_runtime_dir) and listens on its socket.
  static Result<Endpoint> claim(const std::string& dir, const std::string& name);
  Endpoint(Endpoint&&) = default;
  Endpoint& operator=(Endpoint&&) = default;
  ~Endpoint();  // Removes the socket and lock file (if still ours), then releases the lock.

  int listen_fd() const { return listen_.get(); }
  const std::string& name() const { return name_; }
  bool removed_stale() const { return removed_stale_; }

 private:
  Endpoint() = default;
  std::string name_, sock_name_, lock_name_;
  privdir::Dir dir_;  // Everything is reached through it (privdir), from claim to removal.
  UniqueFd lock_, listen_;
  bool removed_stale_ = false;
};

// Names whose lock is held right now, sorted (none if `dir` is missing or refused).
std::vector<std::string> running_names(const std::string& dir);

struct ProcessStats {
  std::string role;  // "broker", "vcpu", "blk worker for disk.img"
  int pid = 0;
  uint64_t rss_kib = 0, cpu_ms = 0;
};
struct DiskStats {
  std::string worker;  // "blk worker for disk.img"
  uint64_t read_requests = 0, write_requests = 0, flush_requests = 0, other_requests = 0;
  uint64_t bytes_read = 0, bytes_written = 0, errors = 0;
  uint32_t in_flight = 0;
};
struct VmStats {
  std::string name, state;  // state: "running" or "stopping"
  uint64_t uptime_ms = 0;
  uint32_t cpus = 0;
  uint64_t mem_bytes = 0;
  std::vector<ProcessStats> processes;
  std::vector<std::string> disks;
  std::vector<DiskStats> disk_stats;  // From the workers that answered in time.
  std::vector<std::string> missing_stats;  // The workers that did not, and why: "blk worker for d.img: ...".
  uint32_t vsock_cid = 0;             // 0: no vsock device.
  std::string vsock_socket;           // Its hybrid socket (CONNECT <port>; guest port N: _N).
};

// Resident set and CPU time of a live process, from /proc (zeros if it is gone).
ProcessStats process_stats(const std::string& role, int pid);
std::string to_json(const VmStats& s);
std::string table_header();
std::string table_row(const VmStats& s);

enum class Verb { kStats, kStop, kPause, kResume, kAgent, kSuspend };

// moss suspend's request: paths as the client resolved them (absolute: the broker's working
// directory is not the client's).
struct SuspendArgs {
  std::string spore;
  std::string store;
  bool keep_running = false;
};

struct Request {
  Verb verb = Verb::kStats;
  SuspendArgs suspend;  // kSuspend
};

// Pure decoders of what a peer sends (fuzzed in fuzz/fuzz_broker_peers.cc): a request as the
// broker reads it, and a stats reply as `moss stats` reads it. A suspend request's paths
// must be absolute and not empty.
Result<Request> decode_request(std::span<const uint8_t> packet);
Result<VmStats> decode_stats_reply(std::span<const uint8_t> packet);
// The reply to an agent request as `moss exec` reads it: ok (the socket is attached), or the
// broker's sentence why not.
Result<void> decode_agent_reply(std::span<const uint8_t> packet);

// The broker's side, one reply per connection (broker/control_server.h reads the request
// with decode_request() and answers from its loop). A reply that cannot be sent is dropped:
// the client sees the connection close.
void answer_stats(int conn, const VmStats& s);
void answer_stopping(int conn);
void answer_error(int conn, const std::string& message);
// Answers pause/resume: done, or the sentence why not.
void answer_pause(int conn, Verb verb, const Result<void>& outcome);
// Answers suspend: the sentence saying where the spore is, or why there is none.
void answer_suspend(int conn, const Result<std::string>& outcome);
// Answers an agent request: `agent` (a socket connected to the guest agent, CONNECT sent) is
// attached to the reply, or the sentence why there is none.
void answer_agent(int conn, const Result<UniqueFd>& agent);

// The client's side: one request on a fresh connection to N's socket.
Result<VmStats> query_stats(const std::string& dir, const std::string& name);
// Asks N to stop, then waits (up to `wait_seconds`) until it has ended.
Result<void> request_stop(const std::string& dir, const std::string& name, int wait_seconds);
// Pauses or resumes N's vCPUs; returns once they are.
Result<void> request_pause(const std::string& dir, const std::string& name, bool pause);
// Asks N to write itself into a spore; returns the broker's sentence once it is written.
// Waits as long as the write takes (the broker answers when it is done or has failed).
Result<std::string> request_suspend(const std::string& dir, const std::string& name, const SuspendArgs& args);
// A connection to N's guest agent, from its broker (the control socket is the VM's access
// control): the vsock worker's socket on which "CONNECT <agent port>\n" was sent; the caller
// reads the answer (agent::vsock_handshake_answer) and then speaks the agent protocol.
Result<UniqueFd> request_agent(const std::string& dir, const std::string& name);

}  // namespace moss::control
