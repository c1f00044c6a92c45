#include "broker/standalone.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>

#include "base/fd.h"
#include "broker/jail.h"
#include "devices/modules.h"

namespace moss::standalone {
namespace {

// Options whose value is an fd the worker inherits: passed on as the child's fd 3, 4, ...
constexpr const char* kFdOptions[] = {"--fd", "--disk-fd", "--uds-fd", "--connect-fd", "--control-fd"};

// An option as the workers' command lines take it: "--name value" or "--name=value".
struct Arg {
  std::string name;
  std::optional<std::string> value;  // Set when the option carries one.
  size_t index = 0;                  // Of the name in args.
  bool inline_value = false;         // "--name=value".
};

std::optional<Arg> find(const std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 0; i < args.size(); i++) {
    if (args[i] == name) return Arg{name, i + 1 < args.size() ? std::optional(args[i + 1]) : std::nullopt, i, false};
    if (args[i].rfind(name + "=", 0) == 0) return Arg{name, args[i].substr(name.size() + 1), i, true};
  }
  return std::nullopt;
}

std::optional<uint64_t> number(const std::optional<Arg>& a) {
  if (!a || !a->value) return std::nullopt;
  uint64_t n = 0;
  const std::string& v = *a->value;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

bool has_flag(const std::vector<std::string>& args, const std::string& flag) {
  for (const auto& a : args) {
    if (a == flag) return true;
  }
  return false;
}

pid_t g_worker = -1;
volatile sig_atomic_t g_signalled = 0;

void forward(int sig) {
  if (g_worker > 0) ::kill(g_worker, sig);
  g_signalled = 1;
  // A worker that has not yet installed its own handler (PID 1 of its namespace ignores
  // what it does not handle) is ended 5 s later.
  ::alarm(5);
}

void kill_worker(int) {
  if (g_worker > 0) ::kill(g_worker, SIGKILL);
}

// Removes `path` if it is a socket: what the jailed worker made there and cannot unlink.
void remove_socket(const std::optional<Arg>& a) {
  if (!a || !a->value) return;
  struct stat st;
  if (::lstat(a->value->c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(a->value->c_str());
}

}  // namespace

Result<ChildSpec> worker_spec(const std::string& kind, const std::string& worker_path, const std::vector<std::string>& args) {
  ChildSpec spec;
  spec.path = worker_path;
  spec.argv = {"moss-" + kind};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  for (const char* name : kFdOptions) {
    auto a = find(spec.argv, name);
    if (!a) continue;
    auto n = number(a);
    if (!n || *n > 1 << 30) return make_error(std::string(name) + " needs a file descriptor number");
    std::string child_fd = std::to_string(spec.pass_fd(static_cast<int>(*n)));
    if (a->inline_value) {
      spec.argv[a->index] = std::string(name) + "=" + child_fd;
    } else {
      spec.argv[a->index + 1] = child_fd;
    }
  }
  const device::Module* module = device::find(kind);
  if (module == nullptr) return make_error("unknown device kind '" + kind + "'");
  auto lookup = [&args](std::string_view name) -> std::optional<std::string> {
    auto a = find(args, std::string(name));
    return a ? a->value : std::nullopt;
  };
  spec.sandbox = jail::worker(module->role(), module->standalone_limits(lookup), true);
  return spec;
}

int run(const std::string& kind, const std::string& worker_path, std::vector<std::string> args) {
  bool unjailed = false;
  std::erase_if(args, [&](const std::string& a) { return a == "--no-sandbox" ? (unjailed = true) : false; });
  if (unjailed) std::fputs(jail::no_sandbox_warning().c_str(), stderr);
  // Unjailed by request, or reading nothing from a peer: the worker program itself, in place.
  if (unjailed || has_flag(args, "--help") || has_flag(args, "-h") || has_flag(args, "--print-capabilities")) {
    std::vector<std::string> argv{"moss-" + kind};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(worker_path.c_str(), cargv.data());
    std::fprintf(stderr, "moss: %s\n", sys_message("run", "the " + kind + " worker " + worker_path, errno).c_str());
    return 125;
  }
  auto spec = worker_spec(kind, worker_path, args);
  if (!spec.ok()) {
    std::fprintf(stderr, "moss: %s\n", spec.error().message.c_str());
    return 2;
  }
  // Signals that arrive while the worker starts are held, then forwarded.
  sigset_t forwarded, old;
  sigemptyset(&forwarded);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT}) sigaddset(&forwarded, s);
  sigprocmask(SIG_BLOCK, &forwarded, &old);
  int early = 0;
  auto pid = spawn_child(*spec, &early);
  if (!pid.ok()) {
    sigprocmask(SIG_SETMASK, &old, nullptr);
    // A worker that ended on its own before its jail was complete (bad usage, a disk it
    // cannot open, a socket path in use) has said why on stderr, and its status is the one.
    if (pid.error().err == ECHILD && WIFEXITED(early)) return WEXITSTATUS(early);
    std::fprintf(stderr, "moss: cannot start the %s worker: %s\n", kind.c_str(), pid.error().message.c_str());
    return 125;
  }
  g_worker = *pid;
  struct sigaction sa {};
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
  sa.sa_handler = kill_worker;
  sigaction(SIGALRM, &sa, nullptr);
  sigprocmask(SIG_SETMASK, &old, nullptr);

  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_worker = -1;
  ::alarm(0);
  if (const device::Module* module = device::find(kind)) {
    for (const auto& option : module->socket_options()) remove_socket(find(args, option));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  int sig = WTERMSIG(status);
  if (!(g_signalled && sig == SIGKILL)) {
    std::fprintf(stderr, "moss: the %s worker (pid %d) %s\n", kind.c_str(), static_cast<int>(*pid),
                 describe_wait_status(status).c_str());
  }
  return 128 + sig;
}

}  // namespace moss::standalone
