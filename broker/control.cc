#include "broker/control.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include <kj/exception.h>

#include "base/file.h"
#include "base/syscall.h"
#include "ipc/channel.h"
#include "ipc/control.capnp.h"
#include "ipc/json.h"

namespace moss::control {
namespace {

constexpr size_t kMaxNameLength = 64;
constexpr int kIoTimeoutSeconds = 2;  // The broker answers at once, or within a pause.

Result<UniqueFd> connect_to(const std::string& dir, const std::string& name) {
  MOSS_TRY_VOID(check_name(name));
  auto d = open_runtime_dir(dir, /*create=*/false);
  if (!d && d.error().err == ENOENT) return make_error("no VM named " + name + " is running", ENOENT);
  if (!d) return std::move(d).take_error();
  auto sock = privdir::connect_at(*d, name + ".sock", SOCK_SEQPACKET);
  if (!sock) {
    int e = sock.error().err;
    if (e == ENOENT || e == ECONNREFUSED) return make_error("no VM named " + name + " is running", e);
    return std::move(sock).take_error();
  }
  timeval tv{kIoTimeoutSeconds + 5, 0};  // A pause waits for every vCPU (up to 5 s).
  MOSS_TRY_VOID(MOSS_SYS(setsockopt(sock->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  return sock;
}

// One request, and the raw bytes of the reply packet. `wait_seconds`: how long the answer
// may take (0: the default for a request the broker answers at once or within a pause).
Result<std::vector<uint8_t>> transact(const std::string& dir, const std::string& name, const Request& request,
                                      int wait_seconds = 0) {
  const Verb verb = request.verb;
  MOSS_TRY(UniqueFd sock, connect_to(dir, name));
  if (wait_seconds > 0) {
    timeval tv{wait_seconds, 0};
    MOSS_TRY_VOID(MOSS_SYS(setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  }
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<ipc::ControlRequest>();
  req.setVersion(ipc::CONTROL_PROTOCOL_VERSION);
  switch (verb) {
    case Verb::kStats: req.setStats(); break;
    case Verb::kStop: req.setStop(); break;
    case Verb::kPause: req.setPause(); break;
    case Verb::kResume: req.setResume(); break;
    case Verb::kSuspend: {
      auto s = req.initSuspend();
      s.setSpore(request.suspend.spore);
      s.setStore(request.suspend.store);
      s.setKeepRunning(request.suspend.keep_running);
      break;
    }
    case Verb::kAgent: req.setAgent(); break;
  }
  MOSS_TRY_VOID(ipc::send_message(sock.get(), mb));
  std::vector<uint8_t> buf(ipc::kMaxPacketBytes + 1);
  ssize_t n;
  do {
    n = recv(sock.get(), buf.data(), buf.size(), MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return timeout_error("the VM named " + name + " did not answer within " +
                         std::to_string(wait_seconds > 0 ? wait_seconds : kIoTimeoutSeconds + 5) + " s");
  }
  if (n < 0) return sys_error("get an answer from", "the VM named " + name);
  if (n == 0) return make_error("the VM named " + name + " closed its control socket without answering");
  if (static_cast<size_t>(n) > ipc::kMaxPacketBytes) return make_error("the VM named " + name + " sent an oversized reply");
  buf.resize(static_cast<size_t>(n));
  return buf;
}

void fill_stats(ipc::VmStats::Builder out, const VmStats& s) {
  out.setName(s.name);
  out.setState(s.state);
  out.setUptimeMs(s.uptime_ms);
  out.setCpus(s.cpus);
  out.setMemBytes(s.mem_bytes);
  out.setVsockCid(s.vsock_cid);
  out.setVsockSocket(s.vsock_socket);
  auto procs = out.initProcesses(static_cast<unsigned>(s.processes.size()));
  for (unsigned i = 0; i < s.processes.size(); i++) {
    procs[i].setRole(s.processes[i].role);
    procs[i].setPid(s.processes[i].pid);
    procs[i].setRssKib(s.processes[i].rss_kib);
    procs[i].setCpuMs(s.processes[i].cpu_ms);
  }
  auto disks = out.initDisks(static_cast<unsigned>(s.disks.size()));
  for (unsigned i = 0; i < s.disks.size(); i++) disks.set(i, s.disks[i]);
  auto ds = out.initDiskStats(static_cast<unsigned>(s.disk_stats.size()));
  for (unsigned i = 0; i < s.disk_stats.size(); i++) {
    const auto& d = s.disk_stats[i];
    ds[i].setWorker(d.worker);
    ds[i].setReadRequests(d.read_requests);
    ds[i].setWriteRequests(d.write_requests);
    ds[i].setFlushRequests(d.flush_requests);
    ds[i].setOtherRequests(d.other_requests);
    ds[i].setBytesRead(d.bytes_read);
    ds[i].setBytesWritten(d.bytes_written);
    ds[i].setErrors(d.errors);
    ds[i].setInFlight(d.in_flight);
  }
  auto missing = out.initMissingStats(static_cast<unsigned>(s.missing_stats.size()));
  for (unsigned i = 0; i < s.missing_stats.size(); i++) missing.set(i, s.missing_stats[i]);
}

}  // namespace

Result<void> check_name(const std::string& name) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  };
  bool valid = !name.empty() && name.size() <= kMaxNameLength && ok_char(name[0]) && name[0] != '.' &&
               name[0] != '_' && name[0] != '-' && std::all_of(name.begin(), name.end(), ok_char);
  if (!valid) {
    return make_error("'" + name + "' is not a valid VM name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  return {};
}

std::string runtime_dir() {
  if (const char* d = std::getenv("MOSS_RUNTIME_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_RUNTIME_DIR"); d && *d) return std::string(d) + "/moss";
  if (geteuid() == 0 && access("/run", W_OK) == 0) return "/run/moss";
  return "/tmp/moss-" + std::to_string(geteuid());
}

Result<privdir::Dir> open_runtime_dir(const std::string& path, bool create) {
  auto d = privdir::Dir::open(path, "runtime directory", create);
  if (!d && d.error().err != ENOENT) {
    return make_error(d.error().message + " (set $MOSS_RUNTIME_DIR to a directory of your own to use another)",
                      d.error().err);
  }
  return d;
}

Result<Endpoint> Endpoint::claim(const std::string& dir, const std::string& name) {
  MOSS_TRY_VOID(check_name(name));
  Endpoint e;
  MOSS_TRY(e.dir_, open_runtime_dir(dir, /*create=*/true));
  e.name_ = name;
  e.lock_name_ = name + ".lock";
  e.sock_name_ = name + ".sock";
  for (int attempt = 0;; attempt++) {
    MOSS_TRY(UniqueFd lock, e.dir_.open_file(e.lock_name_, O_RDWR | O_CREAT, 0600));
    if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) return make_error("a VM named " + name + " is already running (see moss ls)");
      return sys_error("lock", e.dir_.path_of(e.lock_name_));
    }
    // The previous owner may have unlinked the file between our open and our flock: then the
    // lock we hold is on a file nobody else will find. Try again on the current one.
    if (!e.dir_.same_file(lock.get(), e.lock_name_)) {
      if (attempt > 10) return make_error("cannot take the lock " + e.dir_.path_of(e.lock_name_) + ": it keeps being replaced");
      continue;
    }
    e.lock_ = std::move(lock);
    break;
  }
  // We hold the name: any socket left is from a run that crashed.
  if (e.dir_.remove(e.sock_name_)) e.removed_stale_ = true;
  MOSS_TRY(int s, MOSS_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)));
  e.listen_.reset(s);
  std::string path = e.dir_.fd_path(e.sock_name_);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("the control socket name " + e.sock_name_ + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("create", "the control socket " + e.dir_.path_of(e.sock_name_));
  }
  MOSS_TRY_VOID(MOSS_SYS(listen(s, 8)));
  return e;
}

Endpoint::~Endpoint() {
  if (!lock_) return;  // Moved from.
  listen_.reset();
  dir_.remove(sock_name_);
  if (dir_.same_file(lock_.get(), lock_name_)) dir_.remove(lock_name_);
  lock_.reset();  // Releases the lock last: until now the name was ours.
}

std::vector<std::string> running_names(const std::string& dir) {
  std::vector<std::string> names;
  auto d = open_runtime_dir(dir, /*create=*/false);
  if (!d) return names;
  for (const std::string& f : d->entries()) {
    if (f.size() <= 5 || f.compare(f.size() - 5, 5, ".lock") != 0) continue;
    std::string name = f.substr(0, f.size() - 5);
    if (!check_name(name)) continue;
    auto fd = d->open_file(f, O_RDONLY, 0);
    if (!fd) continue;
    // The lock is held (we cannot take it): the VM is running.
    if (flock(fd->get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

ProcessStats process_stats(const std::string& role, int pid) {
  ProcessStats p{role, pid, 0, 0};
  if (auto status = read_text_file("/proc/" + std::to_string(pid) + "/status")) {
    auto at = status->find("\nVmRSS:");
    if (at != std::string::npos) p.rss_kib = std::strtoull(status->c_str() + at + 7, nullptr, 10);
  }
  if (auto stat = read_text_file("/proc/" + std::to_string(pid) + "/stat")) {
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    auto close = stat->rfind(')');
    if (close != std::string::npos) {
      const char* q = stat->c_str() + close + 2;
      unsigned long long utime = 0, stime = 0;
      if (std::sscanf(q, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) == 2) {
        long hz = sysconf(_SC_CLK_TCK);
        p.cpu_ms = (utime + stime) * 1000 / static_cast<unsigned long long>(hz > 0 ? hz : 100);
      }
    }
  }
  return p;
}

std::string to_json(const VmStats& s) {
  capnp::MallocMessageBuilder mb;
  auto out = mb.initRoot<ipc::VmStats>();
  fill_stats(out, s);
  return ipc::to_json(out.asReader());
}

std::string table_header() { return "NAME                 STATE     UPTIME   CPUS  MEMORY   RSS(ALL)  DISKS\n"; }

std::string table_row(const VmStats& s) {
  uint64_t rss = 0;
  for (const auto& p : s.processes) rss += p.rss_kib;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-20s %-9s %6llus  %4u  %5lluM  %7lluM  %zu\n", s.name.c_str(), s.state.c_str(),
                static_cast<unsigned long long>(s.uptime_ms / 1000), s.cpus,
                static_cast<unsigned long long>(s.mem_bytes >> 20), static_cast<unsigned long long>(rss >> 10),
                s.disks.size());
  return buf;
}

namespace {

ipc::ControlReply::Builder init_reply(capnp::MallocMessageBuilder& mb) {
  auto out = mb.initRoot<ipc::ControlReply>();
  out.setVersion(ipc::CONTROL_PROTOCOL_VERSION);
  return out;
}


}  // namespace

void answer_stats(int conn, const VmStats& s) {
  capnp::MallocMessageBuilder mb;
  auto reply = init_reply(mb);
  fill_stats(reply.initStats(), s);
  (void)ipc::send_message(conn, mb);
}

void answer_stopping(int conn) {
  capnp::MallocMessageBuilder mb;
  init_reply(mb).setStopping();
  (void)ipc::send_message(conn, mb);
}

void answer_error(int conn, const std::string& message) {
  capnp::MallocMessageBuilder mb;
  auto reply = init_reply(mb);
  reply.setError(message);
  (void)ipc::send_message(conn, mb);
}

void answer_suspend(int conn, const Result<std::string>& outcome) {
  if (!outcome) return answer_error(conn, outcome.error().message);
  capnp::MallocMessageBuilder mb;
  init_reply(mb).setSuspended(*outcome);
  (void)ipc::send_message(conn, mb);
}

void answer_pause(int conn, Verb verb, const Result<void>& outcome) {
  if (!outcome) return answer_error(conn, outcome.error().message);
  capnp::MallocMessageBuilder mb;
  auto reply = init_reply(mb);
  if (verb == Verb::kPause) reply.setPaused();
  else reply.setResumed();
  (void)ipc::send_message(conn, mb);
}

Result<Request> decode_request(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  std::optional<Verb> verb;
  Request request;
  std::string refusal;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto req = packet->root<ipc::ControlRequest>();
    if (req.getVersion() != ipc::CONTROL_PROTOCOL_VERSION) return;
    switch (req.which()) {
      case ipc::ControlRequest::STATS: verb = Verb::kStats; break;
      case ipc::ControlRequest::STOP: verb = Verb::kStop; break;
      case ipc::ControlRequest::PAUSE: verb = Verb::kPause; break;
      case ipc::ControlRequest::RESUME: verb = Verb::kResume; break;
      case ipc::ControlRequest::SUSPEND: {
        auto s = req.getSuspend();
        request.suspend.spore = s.getSpore().cStr();
        request.suspend.store = s.getStore().cStr();
        request.suspend.keep_running = s.getKeepRunning();
        auto absolute = [](const std::string& p) { return !p.empty() && p[0] == '/' && p.find('\0') == std::string::npos; };
        if (!absolute(request.suspend.spore) || !absolute(request.suspend.store)) {
          refusal = "a suspend request needs the absolute paths of the spore and the store";
          return;
        }
        verb = Verb::kSuspend;
        break;
      }
      case ipc::ControlRequest::AGENT: verb = Verb::kAgent; break;
      default: break;
    }
  })) {
    (void)e;
  }
  if (!refusal.empty()) return make_error(refusal);
  if (!verb) {
    return make_error("this broker does not understand the request (control protocol version " +
                      std::to_string(ipc::CONTROL_PROTOCOL_VERSION) + ")");
  }
  request.verb = *verb;
  return request;
}

void answer_agent(int conn, const Result<UniqueFd>& agent) {
  if (!agent) return answer_error(conn, agent.error().message);
  capnp::MallocMessageBuilder mb;
  init_reply(mb).setAgent();
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  iovec iov{bytes.begin(), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  int fd = agent->get();
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = sendmsg(conn, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  // Not sent: the client sees the connection close without an answer.
}

Result<void> decode_agent_reply(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  std::string error;
  bool ok = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto r = packet->root<ipc::ControlReply>();
    if (r.getVersion() != ipc::CONTROL_PROTOCOL_VERSION) return;
    if (r.isError()) error = r.getError().cStr();
    ok = r.isAgent();
  })) {
    error = std::string("the VM's broker sent a malformed reply: ") + e->getDescription().cStr();
  }
  if (!error.empty()) return make_error(error);
  if (!ok) return make_error("the VM's broker answered with something else than an agent connection");
  return {};
}

Result<VmStats> decode_stats_reply(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  VmStats s;
  std::string error;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto r = packet->root<ipc::ControlReply>();
    if (r.getVersion() != ipc::CONTROL_PROTOCOL_VERSION || !r.isStats()) {
      error = r.isError() ? std::string(r.getError().cStr()) : "the VM's broker answered with something else than its stats";
      return;
    }
    auto in = r.getStats();
    s.name = in.getName().cStr();
    s.state = in.getState().cStr();
    s.uptime_ms = in.getUptimeMs();
    s.cpus = in.getCpus();
    s.mem_bytes = in.getMemBytes();
    s.vsock_cid = in.getVsockCid();
    s.vsock_socket = in.getVsockSocket().cStr();
    for (auto p : in.getProcesses()) s.processes.push_back({p.getRole().cStr(), p.getPid(), p.getRssKib(), p.getCpuMs()});
    for (auto d : in.getDisks()) s.disks.push_back(d.cStr());
    for (auto d : in.getDiskStats()) {
      s.disk_stats.push_back({d.getWorker().cStr(), d.getReadRequests(), d.getWriteRequests(), d.getFlushRequests(),
                              d.getOtherRequests(), d.getBytesRead(), d.getBytesWritten(), d.getErrors(), d.getInFlight()});
    }
    for (auto m : in.getMissingStats()) s.missing_stats.push_back(m.cStr());
  })) {
    error = std::string("the VM's broker sent a malformed reply: ") + e->getDescription().cStr();
  }
  if (!error.empty()) return make_error(error);
  return s;
}

Result<VmStats> query_stats(const std::string& dir, const std::string& name) {
  MOSS_TRY(auto bytes, transact(dir, name, Request{Verb::kStats, {}}));
  return decode_stats_reply(bytes);
}

Result<void> request_stop(const std::string& dir, const std::string& name, int wait_seconds) {
  MOSS_TRY(auto bytes, transact(dir, name, Request{Verb::kStop, {}}));
  bool ok = false;
  if (auto packet = ipc::decode_packet(bytes)) {
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { ok = (*packet)->root<ipc::ControlReply>().isStopping(); })) { (void)e; }
  }
  if (!ok) return make_error("the VM named " + name + " did not accept the stop request");
  for (int i = 0; i < wait_seconds * 20; i++) {
    auto names = running_names(dir);
    if (std::find(names.begin(), names.end(), name) == names.end()) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return make_error("the VM named " + name + " is still stopping after " + std::to_string(wait_seconds) + " s");
}

Result<UniqueFd> request_agent(const std::string& dir, const std::string& name) {
  MOSS_TRY(UniqueFd sock, connect_to(dir, name));
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<ipc::ControlRequest>();
  req.setVersion(ipc::CONTROL_PROTOCOL_VERSION);
  req.setAgent();
  MOSS_TRY_VOID(ipc::send_message(sock.get(), mb));
  std::vector<uint8_t> buf(ipc::kMaxPacketBytes + 1);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(sock.get(), &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  // Every fd that came, owned at once (a broker sends at most one).
  std::vector<UniqueFd> fds;
  if (n >= 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return timeout_error("the VM named " + name + " did not answer within " + std::to_string(kIoTimeoutSeconds + 5) + " s");
  }
  if (n < 0) return sys_error("get an answer from", "the VM named " + name);
  if (n == 0) return make_error("the VM named " + name + " closed its control socket without answering");
  if (static_cast<size_t>(n) > ipc::kMaxPacketBytes || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    return make_error("the VM named " + name + " sent an oversized reply");
  }
  auto decoded = decode_agent_reply(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
  if (!decoded) return make_error("the VM named " + name + " cannot reach its guest agent: " + decoded.error().message);
  if (fds.size() != 1) return make_error("the VM named " + name + " answered without the agent connection");
  return std::move(fds[0]);
}

Result<void> request_pause(const std::string& dir, const std::string& name, bool pause) {
  MOSS_TRY(auto bytes, transact(dir, name, Request{pause ? Verb::kPause : Verb::kResume, {}}));
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  std::string error;
  bool ok = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto r = packet->root<ipc::ControlReply>();
    if (r.isError()) error = r.getError().cStr();
    ok = pause ? r.isPaused() : r.isResumed();
  })) {
    (void)e;
  }
  if (!error.empty()) return make_error("the VM named " + name + " could not " + (pause ? "pause" : "resume") + ": " + error);
  if (!ok) return make_error("the VM named " + name + " answered something else");
  return {};
}

}  // namespace moss::control

namespace moss::control {

Result<std::string> request_suspend(const std::string& dir, const std::string& name, const SuspendArgs& args) {
  // A write of many GiB to a slow disk: the broker answers when it is done or has failed
  // (and a broker that dies closes the connection).
  constexpr int kSuspendWaitSeconds = 3600;
  MOSS_TRY(auto bytes, transact(dir, name, Request{Verb::kSuspend, args}, kSuspendWaitSeconds));
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  std::string error, done;
  bool ok = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto r = packet->root<ipc::ControlReply>();
    if (r.isError()) error = r.getError().cStr();
    if (r.isSuspended()) {
      ok = true;
      done = r.getSuspended().cStr();
    }
  })) {
    (void)e;
  }
  if (!error.empty()) return make_error("the VM named " + name + " could not be suspended: " + error);
  if (!ok) return make_error("the VM named " + name + " answered something else than its suspend");
  return done;
}

}  // namespace moss::control
