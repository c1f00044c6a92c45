// moss-init: PID 1 of the moss guest (see guest/README.md).
//
// Mounts the pseudo file systems, loads the kernel modules listed in
// /lib/modules/moss-modules.list, starts the exec agent on vsock port
// agent::kAgentPort (guest/agent/), prints "moss-init: ready", and, if moss.dial=PORT is
// on the kernel command line, connects to the host (vsock CID 2) on PORT and serves an
// agent session there too (that is how `moss run -- CMD` reaches it). Then it serves agent
// connections until one sends SHUTDOWN: it reports the status ("moss-init: exit N" on the
// console, then a 32-bit outl of N to the moss exit port 0x5f0) and powers the machine off.
//
// Deliberately C-style: no iostreams/stdio, to keep the static binary small.

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>
#include <termios.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#endif

#include <string>
#include <string_view>
#include <vector>

#include "guest/agent/generation.h"
#include "guest/agent/protocol.h"
#include "guest/agent/server.h"
#include "guest/moss-init/cmdline.h"

extern char** environ;

namespace {

constexpr const char kModulesList[] = "/lib/modules/moss-modules.list";
constexpr int kStatusInitError = 125;  // bad moss.* parameters, no agent

// ---------------------------------------------------------------- output --

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// One console line, built without stdio and written with a single write().
class Line {
 public:
  Line() { *this << "moss-init: "; }
  Line& operator<<(std::string_view s) {
    size_t room = sizeof(buf_) - 1 - n_;  // keep one byte for '\n'
    size_t k = s.size() < room ? s.size() : room;
    memcpy(buf_ + n_, s.data(), k);
    n_ += k;
    return *this;
  }
  Line& operator<<(const char* s) { return *this << std::string_view(s); }
  Line& operator<<(const std::string& s) { return *this << std::string_view(s); }
  Line& operator<<(long v) {
    char tmp[24];
    size_t i = sizeof(tmp);
    unsigned long u = v < 0 ? 0UL - static_cast<unsigned long>(v)
                            : static_cast<unsigned long>(v);
    do {
      tmp[--i] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (v < 0) tmp[--i] = '-';
    return *this << std::string_view(tmp + i, sizeof(tmp) - i);
  }
  Line& operator<<(int v) { return *this << static_cast<long>(v); }
  void emit(int fd = STDERR_FILENO) {
    buf_[n_++] = '\n';
    write_all(fd, buf_, n_);
    n_ = 0;
  }

 private:
  char buf_[1024];
  size_t n_ = 0;
};

// "warning: cannot WHAT ARG: <errno text>".
void warn_errno(std::string_view what, std::string_view arg, int err) {
  (Line() << "warning: " << moss::sys_message(what, arg, err)).emit();
}

// ------------------------------------------------------------ file helpers --

bool read_file(const char* path, std::string* out) {
  out->clear();
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      errno = e;
      return false;
    }
    if (r == 0) break;
    out->append(buf, static_cast<size_t>(r));
  }
  close(fd);
  return true;
}

// ------------------------------------------------------------------ setup --

// Makes sure fds 0-2 are open on the console (the kernel opens /dev/console
// for init only if the initramfs has that node).
void ensure_console() {
  bool ok = true;
  for (int fd = 0; fd <= 2; ++fd) ok = ok && fcntl(fd, F_GETFD) != -1;
  if (ok) return;
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) return;  // nowhere to report anything
  for (int i = 0; i <= 2; ++i)
    if (fcntl(i, F_GETFD) == -1) dup2(fd, i);
  if (fd > 2) close(fd);
}

struct MountSpec {
  const char* source;
  const char* target;
  const char* type;
  unsigned long flags;
  const char* data;
};

void mount_filesystems() {
  static const MountSpec kMounts[] = {
      {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
      {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
       "gid=5,mode=0620,ptmxmode=0666"},
      {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
      {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
      {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
  };
  for (const MountSpec& m : kMounts) {
    if (mkdir(m.target, 0755) != 0 && errno != EEXIST)
      warn_errno("create the directory", m.target, errno);
    if (mount(m.source, m.target, m.type, m.flags, m.data) != 0 &&
        errno != EBUSY)
      warn_errno("mount", m.target, errno);
  }
  static const char* const kLinks[][2] = {
      {"/proc/self/fd", "/dev/fd"},
      {"/proc/self/fd/0", "/dev/stdin"},
      {"/proc/self/fd/1", "/dev/stdout"},
      {"/proc/self/fd/2", "/dev/stderr"},
  };
  for (const auto& link : kLinks) symlink(link[0], link[1]);  // best effort
}

void loopback_up() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) warn_errno("bring up", "lo", errno);
  }
  close(s);
}

void load_modules() {
  std::string list;
  if (!read_file(kModulesList, &list)) {
    if (errno != ENOENT) warn_errno("read", kModulesList, errno);
    return;
  }
  struct utsname uts;
  std::string base = "/lib/modules/";
  if (uname(&uts) == 0) base += uts.release;
  base += '/';

  // Relative entries are under /lib/modules/<running kernel>/. If that is
  // missing the initramfs was built for another kernel: say so once instead
  // of once per module, and not at all if the kernel has no module support
  // (everything built in, e.g. the moss-minimal kernel).
  struct stat st;
  bool have_base = stat(base.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  bool warned = access("/proc/modules", F_OK) != 0;

  std::string_view rest = list;
  std::string path;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
      line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' ||
                             line.back() == '\r'))
      line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '/') {
      path.assign(line);
    } else {
      if (!have_base) {
        if (!warned)
          (Line() << "warning: no " << base << ", modules not loaded").emit();
        warned = true;
        continue;
      }
      path = base;
      path.append(line);
    }
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      warn_errno("load the module", path, errno);
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
      warn_errno("load the module", path, errno);
    close(fd);
  }
}

[[noreturn]] void report_and_power_off(int status);

// The agent's listener, made again when it broke (Server's Relisten).
moss::Result<moss::UniqueFd> relisten_agent() {
  auto fd = moss::agent::listen_vsock(moss::agent::kAgentPort);
  if (fd.ok()) (Line() << "agent: listening again on vsock port " << static_cast<long>(moss::agent::kAgentPort)).emit();
  return fd;
}

// GENERATION from the host (a restored VM): entropy, clock, /run/moss/generation.
moss::Result<void> renew_generation(const moss::agent::Frame& g) {
  auto done = moss::agent::apply_generation(g);
  if (done.ok()) {
    (Line() << "generation " << static_cast<long>(g.generation)).emit();
  } else {
    (Line() << "warning: generation " << static_cast<long>(g.generation) << ": " << done.error().message).emit();
  }
  return done;
}

// PID 1's loop: the agent's connections (the listener's, and the one dialled to the host)
// and every child that ends (orphans re-parented to PID 1 included). Ends the VM when an
// agent connection asks for SHUTDOWN.
[[noreturn]] void serve(moss::agent::Server* server) {
  moss::agent::ChildSignals sig;
  auto installed = sig.install();
  bool have_sig = installed.ok();
  if (!have_sig) (Line() << "warning: " << installed.error().message).emit();
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({have_sig ? sig.fd() : -1, POLLIN, 0});
    server->fill(&fds);
    // Without the SIGCHLD pipe, look for ended children now and then. A listener being made
    // again (after a vsock transport reset broke it) has its own time-out.
    int timeout = server->timeout_ms();
    if (!have_sig && (timeout < 0 || timeout > 200)) timeout = 200;
    int r = poll(fds.data(), fds.size(), timeout);
    if (r < 0 && errno != EINTR) {
      warn_errno("wait for", "events", errno);
      report_and_power_off(kStatusInitError);
    }
    if (r < 0) continue;
    if (fds[0].revents) sig.drain();
    moss::agent::reap_children(server);
    server->handle(fds.data() + 1, fds.size() - 1);
    int status;
    if (server->shutdown_requested(&status)) report_and_power_off(status);
  }
}

// ------------------------------------------------------------------- exit --

[[noreturn]] void report_and_power_off(int status) {
  (Line() << "exit " << status).emit(STDOUT_FILENO);
  // Let the UART actually transmit the output before the VMM stops the VM.
  tcdrain(STDOUT_FILENO);
  sync();
#if defined(__x86_64__) || defined(__i386__)
  if (ioperm(moss::guest::kExitPort, 4, 1) == 0) {
    outl(static_cast<unsigned>(status), moss::guest::kExitPort);
  } else {
    warn_errno("get access to", "the exit port (ioperm)", errno);
  }
#endif
  // Still running: no exit port (e.g. plain QEMU). Power off instead.
  sync();
  reboot(RB_POWER_OFF);
  reboot(RB_AUTOBOOT);
  for (;;) pause();  // PID 1 must never exit (kernel panic)
}

}  // namespace

int main() {
  if (getpid() != 1) {
    (Line() << "must run as PID 1").emit();
    return 1;
  }
  umask(022);
  mount_filesystems();
  ensure_console();
  reboot(RB_DISABLE_CAD);  // Ctrl-Alt-Del sends SIGINT to us (ignored)
  if (sethostname("moss", 4) != 0) warn_errno("set", "the hostname", errno);
  loopback_up();
  load_modules();
  signal(SIGPIPE, SIG_IGN);  // The agent writes to sockets and pipes whose readers may go.

  // Listen before the marker: once "ready" is printed, the host can connect.
  auto listening_fd = moss::agent::listen_vsock(moss::agent::kAgentPort);
  if (!listening_fd.ok()) (Line() << "warning: agent: " << listening_fd.error().message).emit();
  moss::UniqueFd listen_fd = listening_fd.ok() ? std::move(listening_fd).value() : moss::UniqueFd();

  (Line() << "ready").emit(STDOUT_FILENO);

  moss::guest::GuestConfig config;
  std::string cmdline;
  if (!read_file("/proc/cmdline", &cmdline)) {
    warn_errno("read", "/proc/cmdline", errno);
  } else {
    moss::guest::ParseResult r = moss::guest::parse_cmdline(cmdline);
    if (!r.ok) {
      (Line() << "bad kernel command line: " << r.error).emit();
      report_and_power_off(kStatusInitError);
    }
    config = r.config;
  }
  bool listening = listen_fd.valid();
  moss::agent::Server server(std::move(listen_fd), renew_generation, relisten_agent);
  if (config.dial_port != 0 && listening) {
    // The host waits for this connection to run its program: a failure here would leave it
    // waiting, so end the VM instead (the host reports the status).
    auto conn = moss::agent::dial_vsock(VMADDR_CID_HOST, config.dial_port);
    if (!conn.ok()) {
      (Line() << "agent: " << conn.error().message).emit();
      report_and_power_off(kStatusInitError);
    }
    server.add_connection(std::move(conn).value());
  }
  // Without the agent nothing could ever happen: stop.
  if (!listening) {
    (Line() << "the agent cannot listen: nothing to run").emit();
    report_and_power_off(kStatusInitError);
  }
  serve(&server);
}
