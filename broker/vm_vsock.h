// The host side of a VM's vsock device, as the broker sets it up for `moss run`: the CID
// lease, the hybrid socket paths the vsock worker serves, and the listener moss-init dials
// once its agent is up (guest/moss-init/cmdline.h, moss.dial).
//
// Paths: --vsock-socket PATH, or by default a private directory of the runtime directory,
// <runtime>/cid-<N>/vsock. The worker's jail sees only that socket's directory (it connects
// to PATH_<port> there for guest-initiated connections), which is why the default is a
// directory of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/fd.h"
#include "base/result.h"
#include "base/unix_socket.h"
#include "broker/cid.h"

namespace moss::vmvsock {

class Plan {
 public:
  // Takes a CID from `cid_dir` and settles the paths: `socket` (--vsock-socket, may be
  // relative; empty: the default under `runtime_dir`). With `dial_port` (nonzero), listens on
  // "<socket>_<dial_port>" for moss-init's connection.
  static Result<std::unique_ptr<Plan>> prepare(const std::string& cid_dir, const std::string& runtime_dir,
                                               const std::string& socket, uint32_t dial_port);
  ~Plan();  // Removes what it created: the dial socket, the worker's socket, the directory.
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  uint32_t cid() const { return lease_.cid(); }
  const std::string& socket_path() const { return socket_; }  // Absolute.
  const std::string& socket_dir() const { return socket_dir_; }
  // The listener moss-init's connection arrives on (invalid without a dial port).
  int dial_listener() const { return dial_listener_.get(); }
  // Done with the dial listener (the agent connected): close it and remove its socket.
  void close_dial_listener();
  // The worker created the socket at socket_path(): remove it at the end if it is still that one.
  void worker_listens();

 private:
  explicit Plan(cid::Lease lease) : lease_(std::move(lease)) {}

  cid::Lease lease_;
  std::string dir_;  // Created for this VM; empty with --vsock-socket.
  std::string socket_, socket_dir_;
  UniqueFd dial_listener_;
  std::optional<SocketPathGuard> dial_guard_, socket_guard_;
};

}  // namespace moss::vmvsock
