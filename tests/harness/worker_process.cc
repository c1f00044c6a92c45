#include "tests/harness/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/syscall.h"

namespace moss::harness {
namespace {

constexpr int kPassedFd = 3;   // Where a worker gets its connected socket with pass_fd.
constexpr int kControlFd = 4;  // And its control socket with `control` (the broker's choice too).
// The child's copies are moved above the fds they are dup2'd to, so no dup2 can overwrite
// another's source.
constexpr int kFirstSpareFd = 10;
constexpr auto kPoll = std::chrono::milliseconds(5);

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

bool is_socket(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

// ---- TempDir ----

Result<TempDir> TempDir::create(const std::string& parent) {
  std::string base = parent;
  if (base.empty()) {
    const char* t = std::getenv("TMPDIR");
    base = t != nullptr && *t != '\0' ? t : "/tmp";
  }
  std::string tmpl = base + "/moss-harness-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return make_error("cannot create a directory under " + base, errno);
  return TempDir(tmpl);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- WorkerProcess ----

WorkerProcess::WorkerProcess(std::string name, TempDir dir)
    : name_(std::move(name)), dir_(std::move(dir)), socket_(dir_.path() + "/vhost.sock"), log_path_(dir_.path() + "/worker.log") {}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0 && !status_) stop();
}

std::string WorkerProcess::binary_path(const std::string& program) {
  std::string var = program.starts_with("moss-") ? program.substr(5) : program;
  for (char& c : var) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  var = "MOSS_" + var;
  if (const char* p = std::getenv(var.c_str()); p != nullptr && *p != '\0') return p;
  if (const char* b = std::getenv("MOSS_BUILD_DIR"); b != nullptr && *b != '\0') return std::string(b) + "/" + program;
  // Test binaries live in the build tree; binaries land at its top (CMAKE_RUNTIME_OUTPUT_DIRECTORY).
  return self_dir() + "/" + program;
}

std::optional<std::string> WorkerProcess::unavailable(const std::string& path) {
  if (::access(path.c_str(), X_OK) != 0) return path + " is not there (or not executable)";
  return std::nullopt;
}

Result<std::unique_ptr<WorkerProcess>> WorkerProcess::start(const std::string& program, const std::vector<std::string>& device_args,
                                                            const WorkerOptions& options, std::chrono::milliseconds timeout) {
  std::string binary = binary_path(program);
  if (auto why = unavailable(binary)) return make_error(program + ": " + *why);
  MOSS_TRY(TempDir dir, TempDir::create());
  std::unique_ptr<WorkerProcess> p(new WorkerProcess(program, std::move(dir)));
  std::vector<std::string> argv = {binary};
  argv.insert(argv.end(), device_args.begin(), device_args.end());
  MOSS_TRY(auto common, p->common_args(options));
  argv.insert(argv.end(), common.begin(), common.end());
  MOSS_TRY_VOID(p->spawn(std::move(argv)));
  if (options.pass_fd) return p;  // Connected already.
  MOSS_TRY_VOID(p->wait_for_sockets({p->socket_path()}, timeout));
  return p;
}

Result<std::vector<std::string>> WorkerProcess::common_args(const WorkerOptions& o) {
  std::vector<std::string> args;
  // Each socketpair's far end goes to the child at `number`, moved above the low numbers first.
  auto pair = [&](int type, UniqueFd& ours, int number) -> Result<void> {
    int sv[2];
    MOSS_TRY_VOID(MOSS_SYS(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv)));
    ours.reset(sv[0]);
    UniqueFd theirs(sv[1]);
    MOSS_TRY(int spare, MOSS_SYS(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, kFirstSpareFd)));
    child_fds_.emplace_back(number, UniqueFd(spare));
    return {};
  };
  if (o.pass_fd) {
    MOSS_TRY_VOID(pair(SOCK_STREAM, connection_, kPassedFd));
    args.insert(args.end(), {"--fd", std::to_string(kPassedFd)});
  } else {
    args.insert(args.end(), {"--socket-path", socket_});
  }
  if (o.control) {
    MOSS_TRY_VOID(pair(SOCK_SEQPACKET, control_, kControlFd));
    args.insert(args.end(), {"--control-fd", std::to_string(kControlFd)});
  }
  args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
  return args;
}

Result<void> WorkerProcess::spawn(std::vector<std::string> args) {
  MOSS_ASSERT(pid_ < 0 && !args.empty());
  // Everything the child needs is prepared before fork: it only calls async-signal-safe
  // functions.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  MOSS_TRY(int log_fd, MOSS_SYS(::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)));
  UniqueFd log(log_fd);
  MOSS_TRY(int null_fd, MOSS_SYS(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  UniqueFd devnull(null_fd);
  pid_t parent = ::getpid();
  MOSS_TRY(pid_t pid, MOSS_SYS(::fork()));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // A crashed test leaves no worker behind.
    if (::getppid() != parent) ::_exit(127);
    ::dup2(devnull.get(), 0);
    ::dup2(log.get(), 1);
    ::dup2(log.get(), 2);
    for (const auto& [number, fd] : child_fds_) ::dup2(fd.get(), number);  // dup2 clears FD_CLOEXEC.
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  // The child's copies only: a closed control socket, for one, means shutdown.
  child_fds_.clear();
  return {};
}

Result<void> WorkerProcess::wait_for_sockets(const std::vector<std::string>& paths, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (const auto& path : paths) all = all && is_socket(path);
    if (all) return {};
    if (!alive()) return make_error(name_ + " " + describe() + " before creating its socket; its log:\n" + log());
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(name_ + " created no socket within " + std::to_string(timeout.count()) + " ms; its log:\n" + log());
    }
    std::this_thread::sleep_for(kPoll);
  }
}

bool WorkerProcess::reap(bool block) {
  if (status_) return true;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    status_ = st;
    return true;
  }
  return false;
}

bool WorkerProcess::alive() { return pid_ > 0 && !reap(false); }

std::optional<int> WorkerProcess::wait_exit(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!reap(false)) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPoll);
  }
  return status_;
}

int WorkerProcess::stop(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  ::kill(pid_, SIGTERM);
  if (auto st = wait_exit(grace)) return *st;
  return kill9();
}

int WorkerProcess::kill9() {
  if (status_) return *status_;
  ::kill(pid_, SIGKILL);
  reap(true);
  return *status_;
}

std::string WorkerProcess::log() const {
  std::ifstream f(log_path_);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string WorkerProcess::describe() const {
  if (!status_) return "is running";
  int st = *status_;
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    const char* abbrev = sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + " (SIG" + (abbrev ? abbrev : "?") + ")";
  }
  return "ended with wait status " + std::to_string(st);
}

std::optional<double> process_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields 3.. : state is field 3, utime field 14, stime field 15.
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace moss::harness
