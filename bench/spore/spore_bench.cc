// Spore benchmark: moss suspend/restore beside QEMU's migration to a file, same kernel, same
// initramfs, same guest size, same host, same run (one VMM after the other).
//
// Rows (each the median of N runs; every run on a fresh store and a fresh file):
//   suspend, 1 GiB guest just after boot: wall time of `moss suspend` (exec -> exit, the spore
//     complete and fsynced) and the spore's bytes on disk (manifest + the chunks it added);
//     QEMU: `stop`, then `migrate "exec:cat > FILE"` until query-migrate says completed, and
//     FILE's size (QEMU 7.2 has no file: migration; exec:cat is what its users do).
//   the same after 512 MiB of the guest's RAM was filled with random bytes: written into guest
//     RAM's file from outside (the broker's memfd through /proc, QEMU's memory-backend-file) at
//     [512 MiB, 1 GiB) while the guest is paused (`moss pause`, QMP `stop`; it never runs on
//     them), then suspended from there: both VMMs must save 512 MiB that neither compresses
//     nor finds zero.
//   restore: exec of `moss restore` -> the restored guest's first instruction (the vcpu process's
//     first KVM_RUN, from --stats); QEMU: exec of `-incoming "exec:cat FILE"` -> query-status
//     running after `cont`.
//   hot start: `moss run --from SPORE -- true` end to end, beside a cold `moss run -- true`
//     (host-side part: exec -> first KVM_RUN; the rest is the guest's).
//   dedup: two spores of one running VM taken a few seconds apart (--keep-running): chunks in
//     each, chunks shared.
//
// Usage: spore_bench --build DIR --kernel K --initrd I --out FILE [--runs N] [--where TEXT]
//                    [--scratch DIR]
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "broker/defaults.h"
#include "guest/moss-init/cmdline.h"

namespace {

using moss::bench::fmt;
using moss::bench::median;
using moss::bench::now_ms;
using moss::bench::ratio;
using moss::bench::read_stats;

namespace fs = std::filesystem;

constexpr uint64_t kFillOffset = 512ull << 20, kFillBytes = 512ull << 20;


// A failed step: thrown, so that the step can be taken again (see attempt()).
struct Failure {
  std::string why;
};

[[noreturn]] void die(const std::string& why, const std::string& output = "") {
  std::fprintf(stderr, "spore_bench: %s\n", why.c_str());
  if (!output.empty()) std::fprintf(stderr, "--- output:\n%s\n", output.c_str());
  throw Failure{why};
}

// Guests in the nested test host now and then die for nothing (tests/nested/README.md: TCG's
// SVM), so a step whose VM failed is taken again, twice at most; every retry and its reason
// goes into the results file.
std::vector<std::string> g_retries;
template <typename F>
auto attempt(const char* step, F f) {
  for (int i = 0;; i++) {
    try {
      return f();
    } catch (const Failure& e) {
      if (i == 2) throw;
      g_retries.push_back(std::string(step) + ": " + e.why);
      std::fprintf(stderr, "spore_bench: taking \"%s\" again\n", step);
    }
  }
}

// A child whose stdout (and stderr) we read.
struct Child {
  pid_t pid = -1;
  int out = -1;
  double start_ms = 0;
  std::string text;

  static Child spawn(const std::vector<std::string>& argv) {
    Child c;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) die("pipe2 failed");
    c.start_ms = now_ms();
    c.pid = fork();
    if (c.pid == 0) {
      setsid();  // No terminal's signals: the bench ends its children itself.
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(p[1], 1);
      dup2(p[1], 2);
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      execvp(a[0], a.data());
      _exit(127);
    }
    close(p[1]);
    c.out = p[0];
    fcntl(c.out, F_SETFL, O_NONBLOCK);
    return c;
  }
  // Reads until `needle` shows up (true) or the child's output ends or the time is up.
  bool wait_for(const std::string& needle, double timeout_s) {
    double end = now_ms() + timeout_s * 1e3;
    while (text.find(needle) == std::string::npos && now_ms() < end) {
      pollfd pf{out, POLLIN, 0};
      if (poll(&pf, 1, 200) <= 0) continue;
      char buf[65536];
      ssize_t n = read(out, buf, sizeof buf);
      if (n == 0) break;
      if (n > 0) text.append(buf, static_cast<size_t>(n));
    }
    return text.find(needle) != std::string::npos;
  }
  // Waits for the exit (SIGKILL after timeout_s); the exit status, 128+signal.
  int wait_exit(double timeout_s = 300) {
    double end = now_ms() + timeout_s * 1e3;
    int status = 0;
    for (;;) {
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      char buf[65536];
      ssize_t n = read(out, buf, sizeof buf);
      if (n > 0) text.append(buf, static_cast<size_t>(n));
      if (now_ms() > end) kill(pid, SIGKILL);
      usleep(2000);
    }
    for (;;) {
      char buf[65536];
      ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    close(out);
    out = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

// Runs f(); if it fails, `vm` is killed first (a retry reuses its name and its files).
template <typename F>
auto or_kill(Child& vm, F f) {
  try {
    return f();
  } catch (const Failure&) {
    kill(vm.pid, SIGKILL);
    if (vm.out >= 0) vm.wait_exit(30);
    throw;
  }
}

struct Timed {
  int status = -1;
  double start_ms = 0;  // CLOCK_MONOTONIC at the exec.
  double ms = 0;
  std::string out;
};

Timed timed(const std::vector<std::string>& argv, double timeout_s = 600) {
  Child c = Child::spawn(argv);
  Timed t;
  t.status = c.wait_exit(timeout_s);
  t.start_ms = c.start_ms;
  t.ms = now_ms() - c.start_ms;
  t.out = c.text;
  return t;
}


uint64_t tree_bytes(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

// Fills [offset, offset + bytes) of a file with pseudo-random bytes (xorshift: incompressible
// to zstd, never a zero page).
void fill_random(const std::string& path, uint64_t offset, uint64_t bytes) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) die("cannot open guest RAM at " + path + ": " + std::strerror(errno));
  std::vector<uint64_t> buf(1 << 17);
  uint64_t x = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(now_ms() * 1000);
  for (uint64_t done = 0; done < bytes; done += buf.size() * 8) {
    for (auto& w : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      w = x;
    }
    if (pwrite(fd, buf.data(), buf.size() * 8, static_cast<off_t>(offset + done)) != static_cast<ssize_t>(buf.size() * 8)) {
      die("cannot write guest RAM: " + std::string(std::strerror(errno)));
    }
  }
  close(fd);
}

// The broker's guest RAM memfd, as /proc/PID/fd/N.
std::string memfd_of(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (int attempt = 0; attempt < 100; attempt++) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      char target[256];
      ssize_t n = readlink(e.path().c_str(), target, sizeof target - 1);
      if (n > 0 && std::string(target, static_cast<size_t>(n)).find("memfd:moss-guest-ram") != std::string::npos) {
        return e.path();
      }
    }
    usleep(50000);
  }
  die("no guest RAM memfd in " + dir);
}

// A QMP connection: one command at a time, answers read up to their "return"/"error".
class Qmp {
 public:
  explicit Qmp(const std::string& path) {
    for (int i = 0; i < 200 && fd_ < 0; i++) {
      int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
      if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) fd_ = s;
      else {
        close(s);
        usleep(50000);
      }
    }
    if (fd_ < 0) die("cannot connect to QEMU's QMP socket " + path);
    read_line_with("\"QMP\"");
    call("{\"execute\":\"qmp_capabilities\"}");
  }
  ~Qmp() {
    if (fd_ >= 0) close(fd_);
  }
  std::string call(const std::string& json) {
    std::string line = json + "\n";
    if (write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) die("QMP write failed");
    for (;;) {
      std::string l = read_line_with("");
      if (l.find("\"return\"") != std::string::npos) return l;
      if (l.find("\"error\"") != std::string::npos) die("QMP " + json + " failed: " + l);
    }
  }

 private:
  std::string read_line_with(const std::string& needle) {
    for (;;) {
      size_t nl;
      while ((nl = buf_.find('\n')) != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (needle.empty() || l.find(needle) != std::string::npos) return l;
      }
      char b[4096];
      ssize_t n = read(fd_, b, sizeof b);
      if (n <= 0) die("QMP connection closed");
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  int fd_ = -1;
  std::string buf_;
};




struct Env {
  std::string moss, kernel, initrd, scratch;
};

// A moss VM booted to moss-init, named, with its console on our pipe.
Child boot_moss(const Env& e, const std::string& name) {
  Child c = Child::spawn({e.moss, "run", "--name", name, "--mem", "1G", "--kernel", e.kernel, "--initrd", e.initrd});
  if (!c.wait_for(std::string(moss::guest::kReadyMarker), 600)) {
    kill(c.pid, SIGKILL);
    c.wait_exit();
    die("moss did not boot Linux to moss-init", c.text);
  }
  return c;
}

struct SuspendFigures {
  double ms = 0;
  double mib = 0;
};

SuspendFigures moss_suspend(const Env& e, bool fill, const std::string& keep_spore = "") {
  fs::remove_all(e.scratch + "/m");
  fs::create_directories(e.scratch + "/m");
  const std::string store = e.scratch + "/m/store", spore = e.scratch + "/m/spore";
  Child vm = boot_moss(e, "spb");
  Timed t = or_kill(vm, [&] {
    if (fill) {
      // Filled while paused: the guest never runs on RAM it did not write itself.
      Timed p = timed({e.moss, "pause", "spb"});
      if (p.status != 0) die("moss pause failed", p.out);
      fill_random(memfd_of(vm.pid), kFillOffset, kFillBytes);
    }
    Timed r = timed({e.moss, "suspend", "spb", "--out", spore, "--store", store});
    if (r.status != 0) die("moss suspend failed", r.out + vm.text);
    return r;
  });
  vm.wait_exit(120);
  SuspendFigures f{t.ms, (tree_bytes(store) + tree_bytes(spore)) / 1048576.0};
  if (!keep_spore.empty()) {
    fs::remove_all(keep_spore);
    fs::rename(e.scratch + "/m", keep_spore);
  } else {
    fs::remove_all(e.scratch + "/m");
  }
  return f;
}

std::vector<std::string> qemu_argv(const Env& e, const std::string& ram_file, const std::string& qmp) {
  return {"qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-nodefaults", "-no-user-config", "-nographic",
          "-no-reboot", "-smp", "1", "-m", "1G", "-object",
          "memory-backend-file,id=ram,size=1G,share=on,mem-path=" + ram_file, "-M", "microvm,memory-backend=ram",
          "-serial", "stdio", "-kernel", e.kernel, "-initrd", e.initrd, "-append", std::string(moss::kBaseCmdline),
          "-qmp", "unix:" + qmp + ",server=on,wait=off"};
}

void wait_migration(Qmp& q) {
  for (int i = 0; i < 600000; i++) {
    std::string s = q.call("{\"execute\":\"query-migrate\"}");
    if (s.find("\"completed\"") != std::string::npos) return;
    if (s.find("\"failed\"") != std::string::npos || s.find("\"cancelled\"") != std::string::npos) {
      die("QEMU's migration failed: " + s);
    }
    usleep(1000);
  }
}

SuspendFigures qemu_suspend(const Env& e, bool fill, const std::string& keep_file = "") {
  const std::string ram = e.scratch + "/qemu-ram", qmp = e.scratch + "/qmp.sock", file = e.scratch + "/qemu.mig";
  fs::remove(ram);
  fs::remove(file);
  Child vm = Child::spawn(qemu_argv(e, ram, qmp));
  if (!vm.wait_for(std::string(moss::guest::kReadyMarker), 600)) {
    kill(vm.pid, SIGKILL);
    vm.wait_exit();
    die("QEMU did not boot Linux to moss-init", vm.text);
  }
  SuspendFigures f;
  or_kill(vm, [&] {
    Qmp q(qmp);
    if (fill) {
      q.call("{\"execute\":\"stop\"}");
      fill_random(ram, kFillOffset, kFillBytes);
    }
    double t0 = now_ms();
    q.call("{\"execute\":\"stop\"}");
    q.call("{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > " + file + "\"}}");
    wait_migration(q);
    f.ms = now_ms() - t0;
    q.call("{\"execute\":\"quit\"}");
    return 0;
  });
  vm.wait_exit(60);
  f.mib = fs::file_size(file) / 1048576.0;
  if (!keep_file.empty()) fs::rename(file, keep_file);
  else fs::remove(file);
  fs::remove(ram);
  return f;
}

// exec of `moss restore` -> the restored guest's first KVM_RUN.
double moss_restore(const Env& e, const std::string& saved) {
  const std::string stats = e.scratch + "/restore-stats.json";
  fs::remove(stats);
  Child vm = Child::spawn({e.moss, "restore", saved + "/spore", "--name", "spr", "--store", saved + "/store",
                           "--stats", stats});
  // Running once the control socket answers; then stopped, which writes --stats.
  bool up = false;
  for (int i = 0; i < 1200 && !up; i++) {
    up = timed({e.moss, "stats", "spr"}, 30).status == 0;
    if (!up) usleep(50000);
  }
  Timed stop = timed({e.moss, "stop", "spr"}, 120);
  int status = vm.wait_exit(120);
  if (!up || stop.status != 0) die("moss restore did not run (status " + std::to_string(status) + ")", vm.text + stop.out);
  auto s = read_stats(stats);
  if (s["first_run_ns"] <= 0) die("moss restore left no first_run_ns in --stats", vm.text);
  return s["first_run_ns"] / 1e6 - vm.start_ms;
}

double qemu_restore(const Env& e, const std::string& file) {
  const std::string ram = e.scratch + "/qemu-ram", qmp = e.scratch + "/qmp.sock";
  fs::remove(ram);
  auto argv = qemu_argv(e, ram, qmp);
  argv.push_back("-incoming");
  argv.push_back("exec:cat " + file);
  Child vm = Child::spawn(argv);
  double ms = -1;
  or_kill(vm, [&] {
    Qmp q(qmp);
    for (int i = 0; i < 600000; i++) {
      std::string s = q.call("{\"execute\":\"query-status\"}");
      if (s.find("\"inmigrate\"") == std::string::npos) break;
      usleep(1000);
    }
    q.call("{\"execute\":\"cont\"}");
    for (int i = 0; i < 600000; i++) {
      if (q.call("{\"execute\":\"query-status\"}").find("\"running\"") != std::string::npos) {
        ms = now_ms() - vm.start_ms;
        break;
      }
      usleep(1000);
    }
    q.call("{\"execute\":\"quit\"}");
    return 0;
  });
  vm.wait_exit(60);
  fs::remove(ram);
  if (ms < 0) die("QEMU's incoming migration never ran", vm.text);
  return ms;
}

std::set<std::string> chunk_ids(const Env& e, const std::string& spore) {
  Timed t = timed({e.moss, "inspect", spore});
  if (t.status != 0) die("moss inspect failed", t.out);
  // Chunk references print as {"hi": "...", "lo": "..."} (capnp JSON); a chunk is its pair.
  std::set<std::string> ids;
  size_t at = 0;
  while ((at = t.out.find("\"hi\":", at)) != std::string::npos) {
    size_t lo = t.out.find("\"lo\":", at);
    size_t end = t.out.find('}', lo);
    if (lo == std::string::npos || end == std::string::npos) break;
    ids.insert(t.out.substr(at, end - at));
    at = end;
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  std::string build, out, where = "this host";
  Env e;
  e.scratch = "/tmp/spore-bench";
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--build") build = v;
    else if (k == "--kernel") e.kernel = v;
    else if (k == "--initrd") e.initrd = v;
    else if (k == "--out") out = v;
    else if (k == "--runs") runs = std::atoi(v.c_str());
    else if (k == "--where") where = v;
    else if (k == "--scratch") e.scratch = v;
  }
  if (build.empty() || e.kernel.empty() || e.initrd.empty() || out.empty() || runs < 1) {
    std::fprintf(stderr, "usage: spore_bench --build DIR --kernel K --initrd I --out FILE [--runs N] [--where TEXT] [--scratch DIR]\n");
    return 2;
  }
  e.moss = build + "/moss";
  fs::create_directories(e.scratch);
  // Named VMs' control sockets in a runtime directory of the bench's own (the nested test
  // host's /run is the outer host's, read-only).
  const std::string runtime = e.scratch + "/rt";
  fs::create_directories(runtime);
  fs::permissions(runtime, fs::perms::owner_all, fs::perm_options::replace);
  setenv("MOSS_RUNTIME_DIR", runtime.c_str(), 1);
  const std::string kept_moss = e.scratch + "/kept-moss", kept_qemu = e.scratch + "/kept-qemu.mig";

  std::vector<double> ms_boot, mb_boot, qs_boot, qb_boot, ms_fill, mb_fill, qs_fill, qb_fill;
  std::vector<double> m_restore, q_restore, hot, cold, hot_host, cold_host;
  size_t a_chunks = 0, b_chunks = 0, shared = 0;
  try {
  for (int i = 0; i < runs; i++) {
    auto m = attempt("moss suspend", [&] { return moss_suspend(e, false, i == 0 ? kept_moss : ""); });
    ms_boot.push_back(m.ms);
    mb_boot.push_back(m.mib);
    auto q = attempt("QEMU migrate", [&] { return qemu_suspend(e, false, i == 0 ? kept_qemu : ""); });
    qs_boot.push_back(q.ms);
    qb_boot.push_back(q.mib);
    m = attempt("moss suspend, filled", [&] { return moss_suspend(e, true); });
    ms_fill.push_back(m.ms);
    mb_fill.push_back(m.mib);
    q = attempt("QEMU migrate, filled", [&] { return qemu_suspend(e, true); });
    qs_fill.push_back(q.ms);
    qb_fill.push_back(q.mib);
  }
  const std::string stats = e.scratch + "/run-stats.json";
  for (int i = 0; i < runs; i++) {
    m_restore.push_back(attempt("moss restore", [&] { return moss_restore(e, kept_moss); }));
    q_restore.push_back(attempt("QEMU incoming", [&] { return qemu_restore(e, kept_qemu); }));
    Timed h = attempt("moss run --from", [&] {
      Timed t = timed({e.moss, "run", "--from", kept_moss + "/spore", "--store", kept_moss + "/store", "--stats", stats,
                       "--", "true"});
      if (t.status != 0) die("moss run --from SPORE -- true failed", t.out);
      return t;
    });
    hot.push_back(h.ms);
    hot_host.push_back(read_stats(stats)["first_run_ns"] / 1e6 - h.start_ms);
    Timed c = attempt("moss run", [&] {
      Timed t = timed({e.moss, "run", "--kernel", e.kernel, "--initrd", e.initrd, "--mem", "1G", "--stats", stats, "--", "true"});
      if (t.status != 0) die("moss run -- true failed", t.out);
      return t;
    });
    cold.push_back(c.ms);
    cold_host.push_back(read_stats(stats)["first_run_ns"] / 1e6 - c.start_ms);
  }
  // Dedup: two spores of one VM, a few seconds apart, in one store.
  attempt("dedup", [&] {
    fs::remove_all(e.scratch + "/d");
    fs::create_directories(e.scratch + "/d");
    const std::string store = e.scratch + "/d/store";
    Child vm = boot_moss(e, "spd");
    or_kill(vm, [&] {
      Timed a = timed({e.moss, "suspend", "spd", "--keep-running", "--out", e.scratch + "/d/a", "--store", store});
      if (a.status != 0) die("the first dedup suspend failed", a.out + vm.text);
      sleep(5);
      Timed b = timed({e.moss, "suspend", "spd", "--out", e.scratch + "/d/b", "--store", store});
      if (b.status != 0) die("the second dedup suspend failed", b.out + vm.text);
      return 0;
    });
    vm.wait_exit(120);
    auto ia = chunk_ids(e, e.scratch + "/d/a"), ib = chunk_ids(e, e.scratch + "/d/b");
    a_chunks = ia.size();
    b_chunks = ib.size();
    shared = 0;
    for (const auto& id : ia) shared += ib.count(id);
    fs::remove_all(e.scratch + "/d");
    return 0;
  });
  } catch (const Failure&) {
    return 1;
  }
  fs::remove_all(kept_moss);
  fs::remove(kept_qemu);

  std::ofstream f(out + ".tmp");
  f << "# moss spores beside QEMU's migration to a file\n\n"
    << "Measured " << where << ", " << runs << " runs each, medians. Guest: Debian's kernel with moss's initramfs, "
    << "1 vCPU, 1 GiB, booted to `moss-init: ready`. QEMU: `qemu-system-x86_64 -accel kvm -cpu host -M microvm` "
    << "with the same images and its RAM in a memory-backend-file; suspend = `stop` + `migrate \"exec:cat > FILE\"` "
    << "to completion, restore = `-incoming \"exec:cat FILE\"` + `cont` to running. moss: `moss suspend NAME --out "
    << "SPORE` (fsynced, crash-safe), `moss restore SPORE`. Fill: 512 MiB of pseudo-random bytes written into guest "
    << "RAM's file at [512 MiB, 1 GiB) from outside while the guest is paused, then suspended from there. Lower is better; ratio = moss / QEMU.\n\n"
    << "| figure | moss | QEMU | ratio |\n|---|---|---|---|\n"
    << "| suspend, just after boot, wall | " << fmt(median(ms_boot), "ms") << " | " << fmt(median(qs_boot), "ms")
    << " | " << ratio(median(ms_boot), median(qs_boot)) << " |\n"
    << "| spore size, just after boot | " << fmt(median(mb_boot), "MiB") << " | " << fmt(median(qb_boot), "MiB")
    << " | " << ratio(median(mb_boot), median(qb_boot)) << " |\n"
    << "| suspend, 512 MiB filled, wall | " << fmt(median(ms_fill), "ms") << " | " << fmt(median(qs_fill), "ms")
    << " | " << ratio(median(ms_fill), median(qs_fill)) << " |\n"
    << "| spore size, 512 MiB filled | " << fmt(median(mb_fill), "MiB") << " | " << fmt(median(qb_fill), "MiB")
    << " | " << ratio(median(mb_fill), median(qb_fill)) << " |\n"
    << "| restore: exec -> guest running | " << fmt(median(m_restore), "ms") << " | " << fmt(median(q_restore), "ms")
    << " | " << ratio(median(m_restore), median(q_restore)) << " |\n"
    << "| `moss run --from SPORE -- true`, wall (hot) | " << fmt(median(hot), "ms") << " | - | - |\n"
    << "| `moss run -- true`, wall (cold, 1 GiB) | " << fmt(median(cold), "ms") << " | - | hot/cold "
    << ratio(median(hot), median(cold)) << " |\n"
    << "| ... host side: exec -> first KVM_RUN, hot | " << fmt(median(hot_host), "ms") << " | - | - |\n"
    << "| ... host side: exec -> first KVM_RUN, cold | " << fmt(median(cold_host), "ms") << " | - | - |\n"
    << "| dedup: chunks in two spores of one VM 5 s apart, shared | " << a_chunks << " and " << b_chunks << ", "
    << shared << " shared | - | - |\n";
  f << "\nSteps taken again (a VM that failed in the nested test host, see tests/nested/README.md): "
    << (g_retries.empty() ? "none" : std::to_string(g_retries.size())) << "\n";
  for (const auto& r : g_retries) f << "- " << r << "\n";
  f.close();
  std::rename((out + ".tmp").c_str(), out.c_str());
  std::ifstream back(out);
  std::fputs(std::string((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>()).c_str(), stdout);
  return 0;
}
