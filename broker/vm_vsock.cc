#include "broker/vm_vsock.h"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "broker/control.h"

namespace moss::vmvsock {

Result<std::unique_ptr<Plan>> Plan::prepare(const std::string& cid_dir, const std::string& runtime_dir,
                                            const std::string& socket, uint32_t dial_port) {
  MOSS_TRY(cid::Lease lease, cid::Lease::take(cid_dir));
  std::unique_ptr<Plan> p(new Plan(std::move(lease)));
  if (socket.empty()) {
    MOSS_CHECK(control::ensure_private_dir(runtime_dir, "runtime directory"));
    p->dir_ = runtime_dir + "/cid-" + std::to_string(p->cid());
    // The CID is ours alone, so anything in its directory was left by a VM that crashed.
    MOSS_CHECK(control::ensure_private_dir(p->dir_, "vsock directory"));
    p->socket_ = p->dir_ + "/vsock";
  } else if (socket[0] == '/') {
    p->socket_ = socket;
  } else {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == nullptr) return make_error(std::string("cannot tell the working directory: ") + strerror(errno));
    p->socket_ = std::string(cwd) + "/" + socket;
  }
  p->socket_dir_ = parent_dir(p->socket_);
  struct stat st;
  if (stat(p->socket_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error("the directory of the vsock socket " + p->socket_ + " does not exist");
  }
  // Guest connections to port N go to "<socket>_N": leave room for the longest port.
  constexpr size_t kMax = sizeof(sockaddr_un{}.sun_path) - 1 - 11;
  if (p->socket_.size() > kMax) {
    return make_error("the vsock socket path " + p->socket_ + " is longer than " + std::to_string(kMax) + " bytes");
  }
  if (dial_port != 0) {
    std::string path = p->socket_ + "_" + std::to_string(dial_port);
    MOSS_TRY(p->dial_listener_, listen_unix(path, 4, /*nonblocking=*/true));
    p->dial_guard_.emplace(path);
  }
  return p;
}

void Plan::close_dial_listener() {
  dial_listener_.reset();
  dial_guard_.reset();
}

void Plan::worker_listens() { socket_guard_.emplace(socket_); }

Plan::~Plan() {
  dial_guard_.reset();
  socket_guard_.reset();
  if (!dir_.empty()) rmdir(dir_.c_str());  // Only if empty: a user's own sockets stay.
}

}  // namespace moss::vmvsock
