#include "bench/blk/quiet.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace moss::bench::quiet {
namespace {

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

std::string base_name(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string real_path(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (r == nullptr) return "";
  std::string s = r;
  std::free(r);
  return s;
}

// pid -> parent, CPU ticks and name, for every process now.
template <typename Proc>
void scan_procs(std::map<pid_t, Proc>& out) {
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300];
    std::snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE* f = std::fopen(path, "re");
    if (f == nullptr) continue;  // Gone since readdir.
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields resume after
    // the last ')'.
    char* open = std::strchr(buf, '(');
    char* close = std::strrchr(buf, ')');
    if (open == nullptr || close == nullptr || close < open) continue;
    Proc p;
    p.comm.assign(open + 1, close);
    // Fields from 3: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    std::istringstream rest(close + 2);
    std::string field;
    unsigned long long v[18] = {};
    for (int i = 3; i <= 17 && rest >> field; ++i) {
      if (i >= 4) v[i] = std::strtoull(field.c_str(), nullptr, 10);
    }
    p.ppid = static_cast<pid_t>(v[4]);
    p.ticks = v[14] + v[15];
    p.children_ticks = v[16] + v[17];
    out[static_cast<pid_t>(std::atoi(e->d_name))] = p;
  }
  ::closedir(d);
}

// Every pid in `procs` that descends from `root` (root included).
template <typename Proc>
std::set<pid_t> descendants(const std::map<pid_t, Proc>& procs, pid_t root) {
  std::set<pid_t> out;
  for (const auto& [pid, p] : procs) {
    pid_t at = pid;
    for (int depth = 0; depth < 64 && at > 1; ++depth) {
      if (at == root) {
        out.insert(pid);
        break;
      }
      auto it = procs.find(at);
      if (it == procs.end()) break;
      at = it->second.ppid;
    }
  }
  return out;
}

// A kernel thread (kthreadd's child) whose work is the block layer's: dispatch (kblockd),
// O_DIRECT completions (dio/DISK), deferred softirqs (ksoftirqd), unwritten-extent conversion.
bool block_io_thread(pid_t ppid, const std::string& comm) {
  if (ppid != 2) return false;
  for (const char* k : {"kblockd", "dio/", "ksoftirqd", "rsv-conversion"}) {
    if (comm.find(k) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::string percent(double share) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", share * 100);
  return b;
}

Probe::Probe(const std::string& disk_file) {
  struct stat st{};
  if (disk_file.empty() || ::stat(disk_file.c_str(), &st) != 0) return;
  char dev[64];
  std::snprintf(dev, sizeof dev, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
  std::string sys = real_path(dev);
  if (sys.empty()) return;
  disk_stat_path_ = sys + "/stat";
  // A partition counts its own requests; its interrupts are its disk's.
  std::string whole = sys;
  if (::access((sys + "/partition").c_str(), F_OK) == 0) whole = sys.substr(0, sys.rfind('/'));
  disk_ = base_name(sys);
  // The interrupts named after the disk's device ("virtio1-req.0", "nvme0q1"), not its
  // configuration interrupt, and the CPUs they are delivered to.
  std::string device = base_name(real_path(whole + "/device"));
  if (device.empty()) return;
  std::ifstream ints("/proc/interrupts");
  std::set<std::string> cpus;
  for (std::string line; std::getline(ints, line);) {
    std::istringstream in(line);
    std::string irq, word, name;
    in >> irq;
    while (in >> word) name = word;
    if (name.rfind(device, 0) != 0 || name.find("config") != std::string::npos) continue;
    if (irq.empty() || irq.back() != ':') continue;
    irq.pop_back();
    std::string list = read_line("/proc/irq/" + irq + "/effective_affinity_list");
    if (!list.empty()) cpus.insert(list);
  }
  for (const std::string& c : cpus) irq_cpus_ += (irq_cpus_.empty() ? "" : ",") + c;
}

Probe::Snapshot Probe::take() const {
  Snapshot s;
  s.wall = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  {
    // "cpu user nice system idle iowait irq softirq steal guest guest_nice" (guest time is
    // already in user).
    std::istringstream in(read_line("/proc/stat"));
    std::string cpu;
    uint64_t v[8] = {};
    in >> cpu;
    for (uint64_t& x : v) in >> x;
    s.stat.busy = v[0] + v[1] + v[2];
    s.stat.irq = v[5] + v[6];
    s.stat.steal = v[7];
    for (uint64_t x : v) s.stat.total += x;
  }
  scan_procs(s.procs);
  if (!disk_stat_path_.empty()) {
    // Fields: reads completed (0), sectors read (2), ms reading (3), writes completed (4),
    // sectors written (6), ms writing (7); sectors are 512 bytes whatever the device's.
    std::istringstream in(read_line(disk_stat_path_));
    std::vector<uint64_t> f;
    for (uint64_t x; in >> x;) f.push_back(x);
    if (f.size() > 7) {
      s.disk_sectors = f[2] + f[6];
      s.disk_requests = f[0] + f[4];
      s.disk_ms = f[3] + f[7];
    }
  }
  return s;
}

void Probe::open() { start_ = take(); }

Window Probe::close() {
  Snapshot end = take();
  Window w;
  w.seconds = end.wall - start_.wall;
  const double total = static_cast<double>(end.stat.total - start_.stat.total);
  if (total <= 0) return w;
  w.ticks = total;

  // The bench's own CPU: this process and every process below it, alive at either end of the
  // window. A descendant's reaped children are in its cutime + cstime; one that was reaped
  // within the window (fio) lands in its parent's, from its start, so its ticks before the
  // window are taken back out.
  pid_t self = ::getpid();
  std::set<pid_t> ours = descendants(start_.procs, self);
  for (pid_t p : descendants(end.procs, self)) ours.insert(p);
  auto all_ticks = [](const Proc& p) { return p.ticks + p.children_ticks; };
  double ours_ticks = 0, load_ticks = 0;
  for (pid_t pid : ours) {
    auto a = start_.procs.find(pid), b = end.procs.find(pid);
    double before = a == start_.procs.end() ? 0 : static_cast<double>(all_ticks(a->second));
    double after = b == end.procs.end() ? 0 : static_cast<double>(all_ticks(b->second));
    double delta = after - before;
    if (pid == load_pid_) load_ticks += delta;
    ours_ticks += delta;
  }
  // Kernel threads carrying block I/O, and the other processes that took the most, by name.
  double io_kernel_ticks = 0;
  std::vector<std::pair<double, std::string>> others;
  for (const auto& [pid, b] : end.procs) {
    if (ours.count(pid)) continue;
    auto a = start_.procs.find(pid);
    if (a == start_.procs.end()) continue;
    double delta = static_cast<double>(b.ticks - a->second.ticks);
    if (block_io_thread(b.ppid, b.comm) || block_io_thread(a->second.ppid, a->second.comm)) {
      io_kernel_ticks += delta;
    } else if (delta / total >= 0.005) {
      others.emplace_back(delta / total, b.comm);
    }
  }
  std::sort(others.rbegin(), others.rend());
  for (size_t i = 0; i < others.size() && i < 3; ++i) {
    w.busiest += (i ? ", " : "") + others[i].second + " " + percent(others[i].first);
  }

  // Time in interrupts is not charged to a task by /proc/stat but is inside a task's own
  // time when it ran on that task's CPU time: left out of the busy time compared with ours,
  // and reported on its own.
  double busy = static_cast<double>(end.stat.busy - start_.stat.busy);
  w.background = std::max(0.0, busy - ours_ticks - io_kernel_ticks) / total;
  w.io_kernel = io_kernel_ticks / total;
  w.irq = static_cast<double>(end.stat.irq - start_.stat.irq) / total;
  w.steal = static_cast<double>(end.stat.steal - start_.stat.steal) / total;
  w.ours = std::max(0.0, ours_ticks - load_ticks) / total;
  w.load_child = load_ticks / total;
  w.disk_bytes = 512.0 * static_cast<double>(end.disk_sectors - start_.disk_sectors);
  w.disk_requests = static_cast<double>(end.disk_requests - start_.disk_requests);
  w.disk_ms = static_cast<double>(end.disk_ms - start_.disk_ms);

  std::istringstream la(read_line("/proc/loadavg"));
  std::string a1, a5, a15, running;
  if (la >> a1 >> a5 >> a15 >> running) w.runnable = std::max(0, std::atoi(running.c_str()) - 1);
  return w;
}

Window Probe::wait_quiet(const Criterion& c, int sample_ms, int max_wait_ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_wait_ms);
  for (;;) {
    open();
    std::this_thread::sleep_for(std::chrono::milliseconds(sample_ms));
    Window w = close();
    if ((!c.others_busy(w) && !c.stolen(w)) || std::chrono::steady_clock::now() >= until) return w;
  }
}

}  // namespace moss::bench::quiet
