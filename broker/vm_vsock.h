// The host side of a VM's vsock device, as the broker sets it up for `moss run`: the CID
// lease, the hybrid socket host programs connect to, and the guest's connections to host
// ports, which the broker makes for the worker.
//
// Paths: --vsock-socket PATH, or by default a private directory of the runtime directory,
// <runtime>/cid-<N>/vsock (made and used through the runtime directory's fd: privdir). The
// broker binds that socket itself and hands the listener to the worker (moss-vsock --uds-fd).
// A guest connecting to host port P reaches "PATH_P", as Firecracker's hybrid vsock does, but
// the jailed worker does not connect there itself: it asks the broker on a socketpair
// (moss-vsock --connect-fd, devices/vsock/hybrid.h) and gets the connected socket back. So
// the worker's jail keeps no host directory at all, whatever directory PATH is in (a --vsock-
// socket in /tmp once showed it every socket there). With a command, the guest's first
// connection to the agent's port is the broker's own: a socketpair, no socket on disk.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/fd.h"
#include "base/result.h"
#include "base/unix_socket.h"
#include "broker/cid.h"
#include "broker/private_dir.h"
#include "devices/vsock/module.h"

namespace moss::vmvsock {

class Plan {
 public:
  // Takes a CID from <runtime_dir>/cids (the runtime directory made 0700 if missing) and binds
  // the socket host programs connect to: `socket` (--vsock-socket, may be relative; empty:
  // the default in <runtime_dir>/cid-<N>). With `dial_port` (nonzero), the guest's first
  // connection to that host port comes to the broker (serve_connect_requests()).
  static Result<std::unique_ptr<Plan>> prepare(const std::string& runtime_dir, const std::string& socket,
                                               uint32_t dial_port);
  ~Plan();  // Removes what it created: the socket, the default socket's directory; frees the CID.
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  uint32_t cid() const { return lease_.cid(); }
  const std::string& socket_path() const { return socket_; }  // Absolute.

  // What the vsock module (devices/vsock/module.h) plans the worker with: the CID, the
  // listener (--uds-fd) and the worker's end of the connect channel (--connect-fd), handed
  // over once (the broker closes them when the worker runs).
  device::vsock::Host worker_host();
  // The broker's end of the worker's connect channel: watch it for reading. -1 once the
  // worker has closed its end (serve_connect_requests() saw it).
  int connect_channel() const { return channel_.get(); }
  // Answers every request waiting on connect_channel(): a socket connected to
  // "<socket>_<port>" (non-blocking; the default socket's through its directory's fd), or
  // the errno why not. The first request for the dial port gets one end of a fresh
  // socketpair instead, and the other end is returned: the agent's connection (once).
  std::optional<UniqueFd> serve_connect_requests();

  // A host-initiated connection to the guest agent (moss exec): a socket connected to the
  // hybrid socket (the worker's listener) with "CONNECT <agent port>\n" sent; the caller
  // reads the worker's "OK <n>" answer. Never blocks.
  Result<UniqueFd> connect_agent() const;

 private:
  explicit Plan(cid::Lease lease) : lease_(std::move(lease)) {}
  Result<UniqueFd> connect_port(uint32_t port) const;
  // A non-blocking stream socket connected to `name` in dir_ (the default socket's directory)
  // or, without it, to the absolute path `name`.
  Result<UniqueFd> connect_socket(const std::string& name) const;

  cid::Lease lease_;
  privdir::Dir runtime_, dir_;  // dir_: <runtime>/cid-<N>, the default socket's; else invalid.
  std::string dir_name_;
  std::string socket_;
  uint32_t dial_port_ = 0;
  bool dialed_ = false;
  UniqueFd listener_, channel_, worker_channel_;
  std::optional<privdir::SocketGuard> dir_socket_guard_;
  std::optional<SocketPathGuard> socket_guard_;
};

}  // namespace moss::vmvsock
