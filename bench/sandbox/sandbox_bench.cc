// Sandbox bench: what jailing costs, beside the same thing with --no-sandbox.
//
//   --spawn  each role (moss-vcpu, moss-blk, moss-vsock) started N times through the broker's launcher
//            (spawn_child, broker/launcher.h), jailed and not: wall ms from the call to the
//            child's report that it entered its sandbox (the moment it could read a peer's
//            first byte); CPU ms of the child until then (/proc/PID/schedstat: the time on a
//            CPU, ns) and of the broker for the call (CLOCK_PROCESS_CPUTIME_ID); the child's
//            PSS at that moment (/proc/PID/smaps_rollup). No KVM needed: the vcpu process is
//            measured before it is given a VM.
//   --pss    a running VM (the spin guest, 64 MiB, one --disk) jailed and not: PSS of the
//            broker, the vcpu process, the blk worker and the vsock worker once the guest
//            runs. Needs KVM.
//
// Each writes a Markdown section to --out. Medians of --runs runs.
// Usage: sandbox_bench (--spawn | --pss) --build DIR --out FILE [--runs N] [--where TEXT]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/fd.h"
#include "broker/jail.h"
#include "broker/launcher.h"
#include "devices/blk/module.h"
#include "devices/vsock/module.h"

namespace {

using moss::ChildSpec;
using moss::UniqueFd;
using moss::sandbox::Role;

double mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double self_cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// KiB, from smaps_rollup's "Pss:" line; -1 if it cannot be read.
double pss_kib(pid_t pid) {
  std::string s = read_text("/proc/" + std::to_string(pid) + "/smaps_rollup");
  size_t p = s.find("\nPss:");
  if (p == std::string::npos) return -1;
  return std::strtod(s.c_str() + p + 5, nullptr);
}

// ms the task has spent on a CPU (its main thread: both roles are single-threaded when they
// report), from /proc/PID/schedstat.
double task_cpu_ms(pid_t pid) {
  std::string s = read_text("/proc/" + std::to_string(pid) + "/schedstat");
  if (s.empty()) return -1;
  return std::strtoull(s.c_str(), nullptr, 10) / 1e6;
}

struct SpawnSample {
  double wall_ms = -1, child_cpu_ms = -1, broker_cpu_ms = -1, pss_kib = -1;
};

SpawnSample spawn_once(const std::string& build, Role role, bool jailed) {
  int sv[2];
  UniqueFd ours, theirs, other;
  ChildSpec spec;
  std::string vsock_dir;
  if (role == Role("vsock")) {
    // Its --uds-path directory is bind-mounted into its jail, so it must exist.
    char tmpl[] = "/tmp/moss-sandbox-bench-vsock.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    vsock_dir = tmpl;
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    spec.path = build + "/moss-vsock";
    spec.argv = {"moss-vsock", "--fd", std::to_string(spec.pass_fd(sv[1])), "--guest-cid", "3", "--uds-path",
                 vsock_dir + "/vsock"};
    spec.sandbox = moss::jail::worker(Role("vsock"), moss::device::vsock::limits(), jailed);
  } else if (role == Role("blk")) {
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    other.reset(memfd_create("moss-bench-disk", MFD_CLOEXEC));
    if (ftruncate(other.get(), 1 << 20) != 0) std::abort();
    spec.path = build + "/moss-blk";
    int fd = spec.pass_fd(sv[1]);
    int disk_fd = spec.pass_fd(other.get());
    spec.argv = {"moss-blk", "--fd", std::to_string(fd), "--disk-fd", std::to_string(disk_fd), "--disk", "bench.img"};
    spec.sandbox = moss::jail::worker(Role("blk"), moss::device::blk::limits(1, 1 << 20), jailed);
  } else {
    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
    other.reset(open("/dev/null", O_RDWR | O_CLOEXEC));
    spec.path = build + "/moss-vcpu";
    spec.argv = {"moss-vcpu", "--control-fd", std::to_string(spec.pass_fd(sv[1]))};
    spec.pass_fd(other.get());
    spec.pass_fd(other.get());
    spec.sandbox = moss::jail::vcpu(1, 0, 0, 64 << 20, jailed);
  }
  ours.reset(sv[0]);
  theirs.reset(sv[1]);
  UniqueFd quiet(open("/dev/null", O_WRONLY | O_CLOEXEC));  // The vcpu process says its peer left.
  spec.stderr_fd = quiet.get();
  SpawnSample s;
  double c0 = self_cpu_ms(), t0 = mono_ms();
  auto pid = moss::spawn_child(spec);
  double t1 = mono_ms(), c1 = self_cpu_ms();
  auto remove_dir = [&] {
    if (vsock_dir.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(vsock_dir, ec);
  };
  if (!pid) {
    std::fprintf(stderr, "sandbox_bench: %s\n", pid.error().message.c_str());
    remove_dir();
    return s;
  }
  s.wall_ms = t1 - t0;
  s.broker_cpu_ms = c1 - c0;
  s.child_cpu_ms = task_cpu_ms(*pid);
  s.pss_kib = pss_kib(*pid);
  ours.reset();  // The child exits when its peer goes.
  waitpid(*pid, nullptr, 0);
  remove_dir();
  return s;
}

std::string fmt(double v, const char* f = "%.2f") {
  if (v < 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string signed_kib(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.0f", v);
  return buf;
}

double minimum(const std::vector<double>& v) { return v.empty() ? -1 : *std::min_element(v.begin(), v.end()); }

std::string spawn_section(const std::string& build, int runs) {
  std::string out =
      "## Spawning a child until it has entered its sandbox\n\n"
      "Median of " + std::to_string(runs) +
      " spawns per row through `spawn_child()` (broker/launcher.h). Wall: the call, up to the\n"
      "child's report that its sandbox is entered (jailed: after clone with seven namespaces, exec,\n"
      "pivot_root, dropping capabilities and loading the seccomp filter). CPU: the child's time on\n"
      "a CPU until then (/proc/PID/schedstat) plus the broker's for the call. PSS: the child at\n"
      "that moment, idle (smaps_rollup).\n\n"
      "| role | mode | wall ms | wall ms, fastest | child CPU ms | broker CPU ms | CPU ms total | PSS KiB |\n"
      "|---|---|---|---|---|---|---|---|\n";
  for (Role role : {Role("vcpu"), Role("blk"), Role("vsock")}) {
    for (bool jailed : {true, false}) {
      std::vector<double> wall, ccpu, bcpu, total, pss;
      spawn_once(build, role, jailed);  // Warm the page cache.
      for (int i = 0; i < runs; i++) {
        SpawnSample s = spawn_once(build, role, jailed);
        if (s.wall_ms < 0) continue;
        wall.push_back(s.wall_ms);
        ccpu.push_back(s.child_cpu_ms);
        bcpu.push_back(s.broker_cpu_ms);
        total.push_back(s.child_cpu_ms + s.broker_cpu_ms);
        pss.push_back(s.pss_kib);
      }
      out += std::string("| ") + moss::sandbox::role_name(role) + " | " + (jailed ? "jailed" : "--no-sandbox") + " | " +
             fmt(median(wall)) + " | " + fmt(minimum(wall)) + " | " + fmt(median(ccpu)) + " | " + fmt(median(bcpu)) + " | " + fmt(median(total)) +
             " | " + fmt(median(pss), "%.0f") + " |\n";
    }
  }
  return out;
}

// ---- PSS of a running VM.

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> kids;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::string stat = read_text("/proc/" + name + "/stat");
    size_t rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    int ppid = 0;
    char state;
    if (std::sscanf(stat.c_str() + rp + 1, " %c %d", &state, &ppid) == 2 && ppid == parent) kids.push_back(std::stoi(name));
  }
  return kids;
}

std::string exe_of(pid_t pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).filename().string();
}

struct VmPss {
  double broker = -1, vcpu = -1, blk = -1, vsock = -1;
};

VmPss vm_once(const std::string& build, const std::string& disk, bool jailed) {
  VmPss r;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return r;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    std::vector<std::string> args = {build + "/moss", "run", "--kernel", build + "/tests/guests/spin.bzImage",
                                     "--initrd", "none", "--mem", "64M", "--disk", disk};
    if (!jailed) args.insert(args.begin() + 2, "--no-sandbox");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(p[1]);
  std::string out;
  double deadline = mono_ms() + 120000;
  while (out.find("spinning") == std::string::npos && mono_ms() < deadline) {
    pollfd pfd{p[0], POLLIN, 0};
    if (poll(&pfd, 1, 500) <= 0) continue;
    char buf[4096];
    ssize_t n = read(p[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (out.find("spinning") != std::string::npos) {
    usleep(200000);  // Let the workers settle after the handshake.
    r.broker = pss_kib(pid);
    for (pid_t kid : children_of(pid)) {
      std::string exe = exe_of(kid);
      if (exe.find("moss-vcpu") != std::string::npos) r.vcpu = pss_kib(kid);
      if (exe.find("moss-blk") != std::string::npos) r.blk = pss_kib(kid);
      if (exe.find("moss-vsock") != std::string::npos) r.vsock = pss_kib(kid);
    }
  } else {
    std::fprintf(stderr, "sandbox_bench: the spin guest did not start: %s\n", out.c_str());
  }
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  close(p[0]);
  return r;
}

std::string pss_section(const std::string& build, int runs) {
  std::string disk = "/tmp/moss-sandbox-bench-" + std::to_string(getpid()) + ".img";
  {
    int fd = open(disk.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 16 << 20) != 0) std::abort();
    close(fd);
  }
  std::vector<double> b[2], v[2], k[2], s[2], all[2];
  for (int i = 0; i < runs; i++) {
    for (int j = 0; j < 2; j++) {
      VmPss r = vm_once(build, disk, j == 0);
      if (r.broker < 0 || r.vcpu < 0 || r.blk < 0 || r.vsock < 0) continue;
      b[j].push_back(r.broker);
      v[j].push_back(r.vcpu);
      k[j].push_back(r.blk);
      s[j].push_back(r.vsock);
      all[j].push_back(r.broker + r.vcpu + r.blk + r.vsock);
    }
  }
  unlink(disk.c_str());
  std::string out =
      "## Memory of each moss process in a running VM\n\n"
      "PSS (smaps_rollup) once the spin guest runs (64 MiB of guest RAM, mostly untouched; one\n"
      "16 MiB `--disk`, the vsock device every VM has), median of " + std::to_string(runs) + " VMs per mode.\n\n"
      "| process | jailed PSS KiB | --no-sandbox PSS KiB | jailed - unjailed KiB |\n"
      "|---|---|---|---|\n";
  auto row = [&](const char* name, std::vector<double>* x) {
    double a = median(x[0]), u = median(x[1]);
    out += std::string("| ") + name + " | " + fmt(a, "%.0f") + " | " + fmt(u, "%.0f") + " | " +
           (a < 0 || u < 0 ? std::string("n/a") : signed_kib(a - u)) + " |\n";
  };
  row("moss (broker)", b);
  row("moss-vcpu", v);
  row("moss-blk", k);
  row("moss-vsock", s);
  row("all", all);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode, build, out_path, where;
  int runs = 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--spawn" || a == "--pss") mode = a;
    else if (a == "--build") build = next();
    else if (a == "--out") out_path = next();
    else if (a == "--runs") runs = std::atoi(next().c_str());
    else if (a == "--where") where = next();
    else {
      std::fprintf(stderr, "usage: sandbox_bench (--spawn | --pss) --build DIR --out FILE [--runs N] [--where TEXT]\n");
      return 2;
    }
  }
  if (mode.empty() || build.empty() || out_path.empty()) {
    std::fprintf(stderr, "usage: sandbox_bench (--spawn | --pss) --build DIR --out FILE [--runs N] [--where TEXT]\n");
    return 2;
  }
  std::string text = mode == "--spawn" ? spawn_section(build, runs ? runs : 50) : pss_section(build, runs ? runs : 5);
  if (!where.empty()) text += "\nMeasured " + where + ".\n";
  else text += "\n";
  std::ofstream f(out_path);
  f << text;
  std::fputs(text.c_str(), stdout);
  return f ? 0 : 1;
}
