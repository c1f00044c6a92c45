// virtio-blk I/O bench (issue 3, acceptance 7; method from issue 10), driven by the host-side
// driver harness (tests/harness): 4 KiB random reads, 4 KiB random writes with a flush after
// every 32 write completions, and 1 MiB sequential reads and writes, each at queue depth 1
// and 32, on one O_DIRECT file on a real filesystem, for
//   - moss-blk (moss's worker),
//   - qemu-storage-daemon's vhost-user-blk export of the same file (cache.direct=on; aio=threads,
//     its default, and aio=io_uring),
//   - fio with ioengine=io_uring, direct=1 on the file: no virtqueue, no second process, the
//     physical limit,
// a section with one CPU-bound process running beside every peer (contended by design: what
// batching completions buys), a transport-only part: moss-null (devices/null/: the worker
// runtime with a device that answers at once) beside qemu-storage-daemon exporting a null-co
// node, so neither
// touches a disk, and fio alone on the CPU taking the disk's interrupts, away from it, and on
// any (the limit's own spread).
//
// The file is read whole before the first run (until a pass is as fast as the one before) and
// once more before every point: on a virtual disk the host's cache of the disk decides what a
// read costs, and a peer must not pay for blocks the host dropped while another ran.
//
// Method. Every point (a workload at a QD) is measured in rounds; in each round every peer
// runs once, the peers taking turns (who goes first rotates), and each cell is the median of
// the rounds with their min-max. Before and during every timed run the machine's other load
// is measured (quiet.h): a run where anything outside the bench took more than a small share
// of the CPU, or the hypervisor stole it, or (read rows) the disk served others, is retried,
// and if it is still contended it is kept, marked, and the file's verdict says so (and its
// line "Promised points" whether the points that carry promises were all clean, which the run
// script requires with MOSS_BENCH_REQUIRE_QUIET=1). Each backend process's CPU time (utime + stime from /proc/PID/stat, all
// its threads) is read around every run and reported per GiB moved; for fio, the job's own
// usr_cpu + sys_cpu. No figure is asserted.
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/blk/quiet.h"
#include "tests/harness/backend_process.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/guest.h"

namespace moss::bench {
namespace {

using harness::BackendKind;
using harness::BackendOptions;
using harness::BackendProcess;
using harness::BlkDriver;
using harness::Guest;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint32_t kFlushEvery = 32;  // Write completions between two flushes.

struct Workload {
  const char* key;    // "randread-4k"
  const char* label;  // "4 KiB random read"
  bool write;
  bool random;
  uint32_t bytes;
  uint32_t flush_every;  // 0: never.
  const char* unit;      // "IOPS" or "MB/s".
};

const Workload kRandRead{"randread-4k", "4 KiB random read", false, true, 4096, 0, "IOPS"};
const Workload kRandWrite{"randwrite-4k-flush32", "4 KiB random write + flush/32", true, true, 4096, kFlushEvery, "IOPS"};
const Workload kSeqRead{"seqread-1m", "1 MiB sequential read", false, false, 1 << 20, 0, "MB/s"};
const Workload kSeqWrite{"seqwrite-1m", "1 MiB sequential write", true, false, 1 << 20, 0, "MB/s"};
const Workload* const kWorkloads[] = {&kRandRead, &kRandWrite, &kSeqRead, &kSeqWrite};

// A workload at a queue depth, run for `seconds` per round.
struct Point {
  const Workload* w;
  uint32_t qd;
  double seconds;
  bool promised = false;  // docs/SPECIFICATION.md makes a promise on it.
  std::string key() const { return std::string(w->key) + "/" + std::to_string(qd); }
};

struct Figure {
  bool ok = false;
  std::string error;
  double ops = 0, bytes = 0, seconds = 0;
  double backend_cpu = 0;  // Seconds.
  double driver_cpu = 0;   // Seconds (the harness, in this process).
  double value(const Workload& w) const {
    if (!ok || seconds <= 0) return NAN;
    return std::strcmp(w.unit, "IOPS") == 0 ? ops / seconds : bytes / seconds / 1e6;
  }
  double per_second() const { return ok && seconds > 0 ? ops / seconds : NAN; }
  double cpu_per_gib() const { return ok && bytes > 0 ? backend_cpu / (bytes / kGiB) : NAN; }
  double cpu_us_per_op() const { return ok && ops > 0 ? backend_cpu / ops * 1e6 : NAN; }
  double driver_cpu_per_gib() const { return ok && bytes > 0 ? driver_cpu / (bytes / kGiB) : NAN; }
};

// One timed run of one peer at one point, with what else the machine did meanwhile.
struct Run {
  Figure fig;
  quiet::Window before, during;
  int attempts = 0;
  std::string contended;  // Why the run is not clean; empty when it is.
};
using Cell = std::vector<Run>;  // One per round.

// A part of the results (disk, beside a busy process, null): peer column -> point key -> cell.
struct Section {
  std::vector<std::string> columns;
  std::vector<Point> points;
  std::map<std::string, std::map<std::string, Cell>> cells;
  std::map<std::string, double> warm_mbps;  // Point key -> the warming pass's MB/s before it.
  const Cell* cell(const std::string& column, const std::string& key) const {
    auto c = cells.find(column);
    if (c == cells.end()) return nullptr;
    auto r = c->second.find(key);
    return r == c->second.end() ? nullptr : &r->second;
  }
};

double self_cpu() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Rng {
  uint64_t x;
  uint64_t next() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  }
};

// One row through the harness: keeps `qd` requests in flight for `seconds`, then drains.
Figure run_row(Guest& g, const Workload& w, uint32_t qd, double seconds, uint64_t capacity_bytes, pid_t backend) {
  Figure f;
  auto d = BlkDriver::create(g, {.queue = 0, .depth = qd, .max_bytes = w.bytes});
  if (!d.ok()) {
    f.error = d.error().message;
    return f;
  }
  BlkDriver& drv = *d;
  Rng rng{0x5eed0000ull + w.bytes + qd};
  const uint64_t units = capacity_bytes / w.bytes;
  uint64_t seq = 0;
  auto next_sector = [&] {
    uint64_t unit = w.random ? rng.next() % units : seq++ % units;
    return unit * (w.bytes / 512);
  };
  std::vector<bool> is_flush(qd, false);
  uint32_t since_flush = 0;
  bool flush_due = false;
  auto submit = [&](uint32_t slot) -> Result<void> {
    harness::BlkOp op;
    if (flush_due) {
      op.type = blk::Type::kFlush;
      flush_due = false;
      is_flush[slot] = true;
    } else {
      op.type = w.write ? blk::Type::kOut : blk::Type::kIn;
      op.sector = next_sector();
      op.bytes = w.bytes;
      is_flush[slot] = false;
    }
    return drv.submit(slot, op);
  };

  auto cpu0 = harness::process_cpu_seconds(backend);
  double self0 = self_cpu();
  auto t0 = Clock::now();
  auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (uint32_t s = 0; s < qd; ++s) {
    if (auto r = submit(s); !r.ok()) {
      f.error = r.error().message;
      return f;
    }
  }
  if (auto r = drv.kick(); !r.ok()) {
    f.error = r.error().message;
    return f;
  }
  while (drv.in_flight() > 0) {
    auto done = drv.reap(1);
    if (!done.ok()) {
      f.error = done.error().message;
      return f;
    }
    bool more = Clock::now() < end;
    for (const harness::Completion& c : *done) {
      if (c.status != blk::kOk) {
        f.error = std::string(is_flush[c.slot] ? "a flush" : "a request") + " failed with " + harness::status_name(c.status);
        return f;
      }
      if (!is_flush[c.slot]) {
        f.ops += 1;
        f.bytes += w.bytes;
        if (w.flush_every && ++since_flush >= w.flush_every) {
          since_flush = 0;
          flush_due = true;
        }
      }
      if (more) {
        if (auto r = submit(c.slot); !r.ok()) {
          f.error = r.error().message;
          return f;
        }
      }
    }
    if (more) {
      if (auto r = drv.kick(); !r.ok()) {
        f.error = r.error().message;
        return f;
      }
    }
  }
  f.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  f.driver_cpu = self_cpu() - self0;
  auto cpu1 = harness::process_cpu_seconds(backend);
  if (!cpu0 || !cpu1) {
    f.error = "the backend process went away";
    return f;
  }
  f.backend_cpu = *cpu1 - *cpu0;
  f.ok = true;
  return f;
}

struct Options {
  std::string out;
  std::string dir = "/var/tmp";
  std::string where;
  double seconds = 5;        // Per round, for the points that carry promises.
  double short_seconds = 2;  // Per round, for the other disk points.
  double null_short_seconds = 1;
  int rounds = 3;
  int retries = 2;        // Per run, when it was contended.
  int retry_budget = 24;  // In the whole bench, so a busy machine cannot stretch it for ever.
  double wait_budget = 60;  // Seconds of waiting for a quiet machine before runs, in all.
  quiet::Criterion criterion;
  // fio's CPUs in the main sections: "any" (it floats, as every other peer does), "irq" (the CPU
  // taking the disk's interrupts), "away" (the others), or a --cpus_allowed list.
  std::string fio_cpus = "any";
  bool stop_when_contended = false;  // Stop at the first run still contended after its retries.
  bool busy = true;               // The section beside one CPU-bound process.
  bool placement = true;          // fio on the interrupts' CPU, away from it, and on any,
  double placement_seconds = 1;   // in rounds this long.
  uint64_t size = kGiB;
  std::string only;  // "disk" or "null": one part only (for development).
};

// One column of the results: something that can run a row.
struct Peer {
  std::string column;
  std::function<Figure(const Workload&, uint32_t qd, double seconds)> row;
  bool disk = true;  // Its I/O reaches the file (the disk check applies).
  std::function<void()> stop = [] {};
};

// A row through the harness against the backend at `socket`, served by process `pid`, on a
// fresh connection with room for qd buffers of the row's size.
Figure harness_row(const std::string& socket, pid_t pid, const Workload& w, uint32_t qd, double seconds,
                   uint64_t capacity) {
  harness::GuestOptions go;
  go.memory_bytes = 8 * kMiB + static_cast<uint64_t>(qd) * w.bytes;
  go.queue_size = 256;
  auto g = Guest::connect(socket, go);
  if (!g.ok()) {
    Figure f;
    f.error = g.error().message;
    return f;
  }
  return run_row(**g, w, qd, seconds, capacity, pid);
}

Peer failed_peer(const std::string& column, const std::string& e) {
  return {column, [e](const Workload&, uint32_t, double) {
            Figure f;
            f.error = e;
            return f;
          }};
}

// A backend process (moss-blk or qsd), started now and kept for every row.
Peer process_peer(const std::string& column, const BackendOptions& o, uint64_t capacity) {
  auto b = BackendProcess::start(o);
  if (!b.ok()) {
    std::fprintf(stderr, "%s: %s\n", column.c_str(), b.error().message.c_str());
    return failed_peer(column, b.error().message);
  }
  std::shared_ptr<BackendProcess> p(std::move(*b));
  return {column,
          [p, capacity](const Workload& w, uint32_t qd, double seconds) {
            return harness_row(p->socket_path(), p->pid(), w, qd, seconds, capacity);
          },
          o.null_bytes == 0,
          [p, column] {
            int st = p->stop();
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
              std::fprintf(stderr, "%s %s\n%s", column.c_str(), p->describe().c_str(), p->log().c_str());
            }
          }};
}

// The null device, the moss-null binary beside this one, in a child process of ours.
Peer moss_null_peer(const std::string& column, const std::string& dir, uint64_t capacity) {
  std::string path = dir + "/null.sock";
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return failed_peer(column, "cannot find this program's directory");
  self[n] = '\0';
  std::string binary = std::string(self).substr(0, std::string(self).rfind('/')) + "/moss-null";
  if (::access(binary.c_str(), X_OK) != 0) return failed_peer(column, binary + " is not built");
  std::string cap = std::to_string(capacity);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // --no-read-zeroes: like the peer's null-co (read-zeroes is off by default), it leaves
    // read buffers alone, so both sides measure the transport and neither touches the data.
    ::execl(binary.c_str(), "moss-null", "--socket-path", path.c_str(), "--capacity", cap.c_str(), "--no-read-zeroes",
            nullptr);
    ::_exit(127);
  }
  // Guest::connect retries until the socket is there.
  return {column,
          [path, pid, capacity](const Workload& w, uint32_t qd, double seconds) {
            return harness_row(path, pid, w, qd, seconds, capacity);
          },
          false,
          [pid] {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
          }};
}

// ---- fio ----

std::optional<double> json_number(const std::string& s, size_t from, const std::string& key) {
  size_t at = s.find("\"" + key + "\"", from);
  if (at == std::string::npos) return std::nullopt;
  at = s.find(':', at);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(s.c_str() + at + 1, nullptr);
}

// fio on the file itself. `cpus`: fio's --cpus_allowed, or "" for any CPU.
Figure run_fio(const Workload& w, uint32_t qd, double seconds, const std::string& file, uint64_t size,
               const std::string& cpus) {
  Figure f;
  std::string rw = w.random ? (w.write ? "randwrite" : "randread") : (w.write ? "write" : "read");
  std::ostringstream cmd;
  // The same seed every run (--randrepeat=1, the harness's generator is seeded alike), no
  // random map (offsets may repeat, as the harness's do), time-based like the harness's rows.
  cmd << "exec fio --name=bench --filename=" << file << " --ioengine=io_uring --direct=1 --rw=" << rw
      << " --bs=" << w.bytes << " --iodepth=" << qd << " --size=" << size
      << " --runtime=" << static_cast<long>(seconds * 1000) << "ms"
      << " --time_based=1 --norandommap=1 --randrepeat=1 --output-format=json";
  if (!cpus.empty()) cmd << " --cpus_allowed=" << cpus;
  if (w.flush_every) cmd << " --fsync=" << w.flush_every;
  cmd << " 2>&1";
  FILE* p = ::popen(cmd.str().c_str(), "r");
  if (p == nullptr) {
    f.error = "cannot run fio";
    return f;
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  size_t section = out.find(w.write ? "\"write\" :" : "\"read\" :");
  if (st != 0 || section == std::string::npos) {
    f.error = "fio failed: " + out.substr(0, 400);
    return f;
  }
  auto ios = json_number(out, section, "total_ios");
  auto bytes = json_number(out, section, "io_bytes");
  auto runtime_ms = json_number(out, section, "runtime");
  auto usr = json_number(out, 0, "usr_cpu"), sys = json_number(out, 0, "sys_cpu");
  auto job_ms = json_number(out, 0, "job_runtime");
  if (!ios || !bytes || !runtime_ms || !usr || !sys || !job_ms || *runtime_ms <= 0) {
    f.error = "unexpected fio output";
    return f;
  }
  f.ops = *ios;
  f.bytes = *bytes;
  f.seconds = *runtime_ms / 1000;
  f.backend_cpu = (*usr + *sys) / 100 * (*job_ms / 1000);
  f.ok = true;
  return f;
}

// ---- The busy process ----

// One CPU-bound child, spinning until killed: the load of the "beside one CPU-bound process"
// section.
pid_t start_spinner() {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    volatile uint64_t x = 0;
    for (;;) x = x + 1;
  }
  return pid;
}

void stop_child(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// ---- Running the rounds ----

std::string fmt(double v, int decimals = 0);

class Runner {
 public:
  Runner(const Options& o, quiet::Probe& probe) : o_(o), probe_(probe), retries_left_(o.retry_budget), wait_left_(o.wait_budget) {}

  // Every point for every peer, o.rounds times; in each round the peers take turns, the
  // first one rotating, so that a drift of the machine lands on all of them alike.
  // `warm`: reads the whole file once before each point (disk sections) and returns its MB/s.
  void run(Section& s, std::vector<Peer>& peers, const char* title, const std::function<double()>& warm = nullptr) {
    for (const Point& pt : s.points) {
      if (stopped_) return;
      if (warm) s.warm_mbps[pt.key()] = warm();
      for (int round = 0; round < o_.rounds && !stopped_; ++round) {
        for (size_t i = 0; i < peers.size() && !stopped_; ++i) {
          Peer& p = peers[(i + static_cast<size_t>(round)) % peers.size()];
          Run r = measure(p, pt);
          bool in_unit = p.disk || std::strcmp(title, "null") != 0;  // Else requests per second.
          std::fprintf(stderr, "  %-6s r%d %-13s %-30s QD%-2u %10.0f %-5s CPU %6.3f s/GiB  other %s steal %s%s%s%s%s\n", title,
                       round + 1, p.column.c_str(), pt.w->label, pt.qd, in_unit ? r.fig.value(*pt.w) : r.fig.per_second(),
                       in_unit ? pt.w->unit : "req/s", r.fig.cpu_per_gib(),
                       quiet::percent(r.during.background).c_str(), quiet::percent(r.during.steal).c_str(),
                       r.attempts > 1 ? (" after " + std::to_string(r.attempts) + " attempts").c_str() : "",
                       r.contended.empty() ? "" : "  CONTENDED: ", r.contended.c_str(),
                       r.fig.ok ? "" : ("  ERROR: " + r.fig.error).c_str());
          s.cells[p.column][pt.key()].push_back(std::move(r));
        }
      }
    }
  }

  int retries_used() const { return o_.retry_budget - retries_left_; }
  // With --stop-when-contended: a run was still contended after its retries, and the bench
  // stopped there.
  bool stopped() const { return stopped_; }

 private:
  Run measure(Peer& p, const Point& pt) {
    Run r;
    for (;;) {
      ++r.attempts;
      // Before: a short sample while nothing of ours runs, repeated (within the budget)
      // until it is quiet.
      auto w0 = Clock::now();
      int wait_ms = wait_left_ > 0 ? 5000 : 0;
      r.before = probe_.wait_quiet(o_.criterion, 300, wait_ms);
      wait_left_ -= std::max(0.0, std::chrono::duration<double>(Clock::now() - w0).count() - 0.3);
      probe_.open();
      r.fig = p.row(*pt.w, pt.qd, pt.seconds);
      r.during = probe_.close();
      r.contended = verdict(r, p.disk && !pt.w->write);
      if (r.contended.empty() || !r.fig.ok || r.attempts > o_.retries || retries_left_ <= 0) {
        if (!r.contended.empty() && pt.promised && o_.stop_when_contended) stopped_ = true;
        return r;
      }
      --retries_left_;
      std::fprintf(stderr, "    %s %s QD%u contended (%s): again\n", p.column.c_str(), pt.w->label, pt.qd, r.contended.c_str());
    }
  }

  std::string verdict(const Run& r, bool check_disk) const {
    const quiet::Criterion& c = o_.criterion;
    std::vector<std::string> why;
    auto busiest = [](const quiet::Window& w) { return w.busiest.empty() ? std::string() : " (" + w.busiest + ")"; };
    if (c.others_busy(r.before))
      why.push_back("before: others took " + quiet::percent(r.before.background) + busiest(r.before));
    if (c.others_busy(r.during))
      why.push_back("others took " + quiet::percent(r.during.background) + busiest(r.during));
    if (c.stolen(r.before)) why.push_back("before: steal " + quiet::percent(r.before.steal));
    if (c.stolen(r.during)) why.push_back("steal " + quiet::percent(r.during.steal));
    if (check_disk && r.fig.ok) {
      double other = r.during.disk_bytes - r.fig.bytes;
      if (other > c.max_other_disk * r.fig.bytes && other > kMiB)
        why.push_back("the disk moved " + fmt(other / kMiB, 1) + " MiB for others");
    }
    std::string s;
    for (const std::string& x : why) s += (s.empty() ? "" : "; ") + x;
    return s;
  }

  const Options& o_;
  quiet::Probe& probe_;
  int retries_left_;
  double wait_left_;
  bool stopped_ = false;
};

// ---- The image ----

std::optional<std::string> make_image(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot open " + path + " with O_DIRECT (" + std::strerror(errno) + "): put --dir on a real filesystem";
  // Reserved in one go, so the filesystem can lay it out in few extents, then real data in
  // every block: reads of holes or unwritten extents would never reach the disk.
  if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) != 0) {
    std::fprintf(stderr, "blk_bench: fallocate: %s (writing the file without it)\n", std::strerror(errno));
  }
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, kMiB) != 0) std::abort();
  Rng rng{42};
  for (uint64_t off = 0; off < size; off += kMiB) {
    auto* words = static_cast<uint64_t*>(buf);
    for (size_t i = 0; i < kMiB / 8; ++i) words[i] = rng.next();
    if (::pwrite(fd, buf, kMiB, static_cast<off_t>(off)) != static_cast<ssize_t>(kMiB)) {
      std::string e = std::strerror(errno);
      ::close(fd);
      std::free(buf);
      return "cannot write the image " + path + " with O_DIRECT: " + e;
    }
  }
  std::free(buf);
  ::fsync(fd);
  ::close(fd);
  return std::nullopt;
}

// Reads the whole file once, in order, 1 MiB at a time through O_DIRECT, and returns the MB/s,
// or NAN. On a virtual disk the host's own cache of the disk decides what a read costs: a block
// it does not hold costs a read of the host's storage, milliseconds instead of tens of
// microseconds. One pass brings every block of the file into that cache (if it has room), so
// every peer and round starts from the same state.
double warm_file(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return NAN;
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, kMiB) != 0) std::abort();
  auto t0 = Clock::now();
  bool ok = true;
  for (uint64_t off = 0; off < size && ok; off += kMiB) {
    ok = ::pread(fd, buf, kMiB, static_cast<off_t>(off)) == static_cast<ssize_t>(kMiB);
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::free(buf);
  ::close(fd);
  return ok && s > 0 ? static_cast<double>(size) / s / 1e6 : NAN;
}

// The file's extents (FIEMAP), or -1.
long extent_count(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  fiemap fm{};
  fm.fm_length = FIEMAP_MAX_OFFSET;
  fm.fm_flags = FIEMAP_FLAG_SYNC;
  fm.fm_extent_count = 0;  // Count only.
  long n = ::ioctl(fd, FS_IOC_FIEMAP, &fm) == 0 ? static_cast<long>(fm.fm_mapped_extents) : -1;
  ::close(fd);
  return n;
}

// The share of the file's pages in this host's page cache (mincore), or -1.
double cached_share(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return -1;
  long page = ::sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> vec((size + page - 1) / page);
  double share = -1;
  if (::mincore(m, size, vec.data()) == 0) {
    size_t in = 0;
    for (unsigned char v : vec) in += v & 1;
    share = static_cast<double>(in) / static_cast<double>(vec.size());
  }
  ::munmap(m, size);
  return share;
}

// ---- Output ----

std::string fmt(double v, int decimals) {
  if (std::isnan(v)) return "n/a";
  char b[64];
  if (decimals == 0) {
    // Thousands separators keep IOPS readable.
    std::snprintf(b, sizeof b, "%.0f", v);
    std::string s = b, out;
    int n = 0;
    for (auto it = s.rbegin(); it != s.rend(); ++it) {
      if (n && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
      out.insert(out.begin(), *it);
      ++n;
    }
    return out;
  }
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

// Rates: "9,989", "61.7k", "1.10M".
std::string rate(double v) {
  if (std::isnan(v)) return "n/a";
  char b[32];
  if (v >= 1e6) std::snprintf(b, sizeof b, "%.2fM", v / 1e6);
  else if (v >= 1e4) std::snprintf(b, sizeof b, "%.1fk", v / 1e3);
  else return fmt(v);
  return b;
}

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Stats {
  double med = NAN, lo = NAN, hi = NAN;
  int n = 0;
  bool contended = false;
};

Stats stats_of(const Cell* c, const std::function<double(const Figure&)>& get) {
  Stats s;
  if (c == nullptr) return s;
  std::vector<double> v;
  for (const Run& r : *c) {
    if (!r.contended.empty()) s.contended = true;
    double x = get(r.fig);
    if (std::isnan(x)) continue;
    v.push_back(x);
    s.lo = s.n ? std::min(s.lo, x) : x;
    s.hi = s.n ? std::max(s.hi, x) : x;
    ++s.n;
  }
  s.med = median(v);
  return s;
}

constexpr const char* kMark = " ‡";  // A cell with a contended run.

// "61.7k (61.5k–64.8k)"; one run: the figure alone.
std::string cell_text(const Stats& s, const std::function<std::string(double)>& f) {
  if (s.n == 0) return "n/a";
  std::string t = f(s.med);
  if (s.n > 1) t += " (" + f(s.lo) + "–" + f(s.hi) + ")";
  return t + (s.contended ? kMark : "");
}

// The ratio of the medians, and the range of the round-by-round ratios (the peers of a
// round ran back to back).
std::string ratio_text(const Cell* a, const Cell* b, const std::function<double(const Figure&)>& get) {
  if (a == nullptr || b == nullptr) return "n/a";
  Stats sa = stats_of(a, get), sb = stats_of(b, get);
  if (std::isnan(sa.med) || std::isnan(sb.med) || sb.med == 0) return "n/a";
  std::vector<double> per;
  for (size_t i = 0; i < a->size() && i < b->size(); ++i) {
    double x = get((*a)[i].fig), y = get((*b)[i].fig);
    if (!std::isnan(x) && !std::isnan(y) && y > 0) per.push_back(x / y);
  }
  std::string t = fmt(sa.med / sb.med, 2) + "x";
  if (per.size() > 1) {
    auto [lo, hi] = std::minmax_element(per.begin(), per.end());
    t += " (" + fmt(*lo, 2) + "–" + fmt(*hi, 2) + ")";
  }
  return t + (sa.contended || sb.contended ? kMark : "");
}

std::string host_line() {
  utsname u{};
  ::uname(&u);
  std::string cpu = "unknown CPU";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return std::string("Linux ") + u.release + ", " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs (" + cpu + ")";
}

std::string fs_name(const std::string& dir) {
  struct statfs s{};
  if (::statfs(dir.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    default: {
      char b[32];
      std::snprintf(b, sizeof b, "fs 0x%lx", static_cast<unsigned long>(s.f_type));
      return b;
    }
  }
}

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

std::string secs(double s) { return fmt(s, s == std::floor(s) ? 0 : 1); }

struct Facts {
  std::string file, fs, disk, scheduler, irq_cpus, fio_cpus;
  long extents = -1;
  double cached_before = -1, cached_after = -1;
  std::vector<double> warm_passes;  // MB/s of the passes over the file before the first run.
  bool stopped = false;             // --stop-when-contended stopped the bench early.
  double wall = 0;
  int retries = 0;
};

// What the limit's spread came from, found on the development machine (issue 10).
constexpr const char* kFioFindings =
    "fio on the file is the limit the ratios are judged against, so its own spread bounds what a ratio can say. "
    "What moved it on the development machine, a Firecracker guest whose virtio disk is a file on the host: the "
    "host's cache of that file. A block the host holds costs tens of microseconds; one it does not, milliseconds. "
    "On a 1 GiB file written two hours earlier, fio at 4 KiB random read QD32 started at 6.2k IOPS and climbed run "
    "by run as its reads filled the host's cache (9.3k, 10.2k, 18.4k, 26.7k, 36.1k, 43.7k, 52.2k, 55.7k, 5 s each, "
    "the machine quiet), and a sequential pass over the file took 3.0 s where the next took 1.0 s. So a peer that "
    "ran while the host had dropped part of the file paid for the others, and the rounds of the same peer moved "
    "with it. Neither this guest's page cache (every peer opens the file O_DIRECT; see the residency above) nor "
    "the file's layout (a handful of extents, the same file for every peer) nor the random offsets (fio's "
    "`--randrepeat=1` repeats them, as the harness's seeded generator does) moves from round to round. The bench "
    "therefore reads the whole file before the first run until a pass is as fast as the one before, and once more "
    "before every point, and shows below the disk's time per request in every fio round (the host's service "
    "time, plus queueing), so that a round the host served slowly stands out. Which CPU fio runs on, relative to "
    "the one taking the disk's completion interrupts, is measured in the last table.";

std::string join_rates(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += (out.empty() ? "" : ", ") + fmt(x);
  return out;
}

const std::string kMoss = "moss-blk", kQsd = "qsd", kQsdU = "qsd io_uring", kFio = "fio";
const std::string kMossNull = "moss null", kQsdNull = "qsd null-co";

void write_results(const Options& o, const Facts& facts, const Section& disk, const Section& busy, const Section& null,
                   const Section& placement) {
  std::ofstream out(o.out);
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));

  // The verdict first: how many timed runs missed the quiet criterion.
  int runs = 0, contended = 0, failed = 0, promised_runs = 0, promised_contended = 0;
  std::vector<std::string> contended_lines;
  auto tally = [&](const Section& s, const char* name) {
    for (const Point& pt : s.points) {
      for (const std::string& col : s.columns) {
        const Cell* c = s.cell(col, pt.key());
        if (c == nullptr) continue;
        for (size_t i = 0; i < c->size(); ++i) {
          const Run& r = (*c)[i];
          ++runs;
          promised_runs += pt.promised;
          if (!r.fig.ok) ++failed;
          if (r.contended.empty()) continue;
          ++contended;
          promised_contended += pt.promised;
          contended_lines.push_back(std::string("- ") + name + ", " + pt.w->label + " QD" + std::to_string(pt.qd) + ", " + col +
                                    ", round " + std::to_string(i + 1) + " (" + std::to_string(r.attempts) +
                                    " attempts): " + r.contended);
        }
      }
    }
  };
  tally(disk, "throughput");
  tally(busy, "beside one CPU-bound process");
  tally(null, "transport only");
  tally(placement, "the limit");
  const quiet::Criterion& c = o.criterion;

  out << "# virtio-blk I/O: moss-blk beside qemu-storage-daemon and fio\n\n"
      << "Measured " << date << " " << o.where << ", on " << host_line() << "; " << fmt(facts.wall / 60, 1)
      << " minutes in all. Generated by `bench/blk/blk_bench.cc` (CTest `bench_blk`).\n\n";
  if (contended == 0) {
    out << "Verdict: quiet. Every one of the " << runs << " timed runs met the quiet criterion below";
    if (facts.retries) out << " (after " << facts.retries << " retries)";
    out << ".\n\n";
  } else if (facts.stopped) {
    out << "Verdict: CONTENDED. Stopped early (--stop-when-contended) after " << runs << " timed runs: " << contended
        << " missed the quiet criterion below even after retries, one of them at a point that carries a promise, so "
           "the rest was not measured; the cells that include one are marked ‡ and are not clean figures (list at the "
           "end).\n\n";
  } else {
    out << "Verdict: CONTENDED. " << contended << " of the " << runs
        << " timed runs missed the quiet criterion below even after retries; every cell and ratio that includes one "
           "is marked ‡ and is not a clean figure (list at the end).\n\n";
  }
  // The points whose figures docs/SPECIFICATION.md uses, on a line of their own (run-blk-bench.sh
  // reads it).
  if (promised_contended == 0 && !facts.stopped) {
    out << "Promised points: clean. All " << promised_runs << " timed runs of the points that carry promises (4 KiB "
           "random read at QD1 and QD32, 4 KiB random write at QD32, 4 KiB random read at QD32 beside one CPU-bound "
           "process, the transport's 4 KiB reads) met the quiet criterion.\n\n";
  } else {
    out << "Promised points: CONTENDED. " << promised_contended << " of the " << promised_runs
        << " timed runs of the points that carry promises missed the quiet criterion"
        << (facts.stopped ? ", and the bench stopped there" : "") << ".\n\n";
  }
  out << "## Method\n\n"
      << "- Rounds: every point (a workload at a QD) is measured in " << o.rounds
      << " rounds; in each round every peer runs once, the peers taking turns (who goes first rotates from round to "
         "round). A cell is the median of its rounds with their range: `median (min–max)`. A ratio is the ratio of "
         "the medians, with the range of the round-by-round ratios. The rounds last "
      << secs(o.seconds) << " s for the points that carry promises (4 KiB random read at QD1 and QD32, 4 KiB random "
      << "write at QD32, the QD32 reads beside one CPU-bound process, and the transport's 4 KiB reads) and " << secs(o.short_seconds) << " s for the other disk points ("
      << secs(o.null_short_seconds) << " s for the other transport points); the column \"s x rounds\" says which.\n"
      << "- Quiet criterion, checked before and during every timed run: everything outside the bench's own process tree "
         "(this process, the backend under test, fio) took at most "
      << quiet::percent(c.max_background) << " of the machine's CPU time (/proc/stat's busy time minus the tree's "
      << "utime + stime and the block-I/O kernel threads'; interrupts left out), the hypervisor stole at most " << quiet::percent(c.max_steal)
      << ", and in read rows the disk moved at most " << quiet::percent(c.max_other_disk)
      << " more bytes than the run's own. \"Before\" is a 0.3 s sample just before the run, repeated for up to 5 s "
         "until quiet; CPU time comes in 10 ms ticks, so a share over the limit counts from " << fmt(c.min_ticks)
      << " ticks on (one stray tick in a 0.3 s sample of 2 CPUs is 1.7%). A run that misses is retried up to "
      << o.retries << " times (at most " << o.retry_budget
      << " retries in the whole bench); if it still misses, it is kept and marked. Why "
      << quiet::percent(c.max_background)
      << ": other load that takes a share b of the CPU costs a peer at most about b of its rate (section \"Beside "
         "one CPU-bound process\" measures b = half the machine), so "
      << quiet::percent(c.max_background)
      << " keeps that within the rounds' own spread, while the idle machine's own daemons take well under 1%.\n"
      << "- The file: " << o.size / kMiB << " MiB on " << facts.fs << " (`" << facts.file
      << "`), reserved with fallocate and then written with data through O_DIRECT, so every read reaches the disk; "
      << "then read whole, in order, until a pass was as fast as the one before (passes: " << join_rates(facts.warm_passes)
      << " MB/s), and once more before every point (section \"Quiet check\"), so that the host's cache under the "
         "virtual disk holds all of it for every peer alike (section \"The limit\"); "
      << (facts.extents >= 0 ? std::to_string(facts.extents) : std::string("unknown")) << " extents (FIEMAP); "
      << (facts.cached_before >= 0 ? quiet::percent(facts.cached_before) : std::string("unknown")) << " of it in the page cache before the runs and "
      << (facts.cached_after >= 0 ? quiet::percent(facts.cached_after) : std::string("unknown"))
      << " after (mincore): every backend opens it O_DIRECT. Block device `" << (facts.disk.empty() ? "unknown" : facts.disk)
      << "`, scheduler `" << facts.scheduler << "`, its completion interrupts on CPU " << (facts.irq_cpus.empty() ? "unknown" : facts.irq_cpus)
      << ".\n"
      << "- Driver: the host-side harness (`tests/harness`): our split virtqueue as the guest driver, a sealed "
         "memfd as guest RAM, EVENT_IDX and INDIRECT_DESC negotiated, one queue of 256, one fresh "
         "vhost-user connection per run, `QD` requests kept in flight; the same random offsets every run.\n"
      << "- Random writes: a FLUSH is queued after every " << kFlushEvery << " write completions (fio: "
      << "`--fsync=" << kFlushEvery << "`); flushes are not counted as operations.\n"
      << "- qemu-storage-daemon: `--blockdev driver=file,cache.direct=on[,aio=io_uring]` exported with "
         "`type=vhost-user-blk`. fio: `--ioengine=io_uring --direct=1 --norandommap --randrepeat=1 --time_based` on "
         "the file itself, no virtqueue and no second process: the physical limit; "
      << (facts.fio_cpus.empty() ? std::string("on any CPU, as every other peer")
                                 : "confined to CPU " + facts.fio_cpus + " (`--cpus_allowed`; the disk's interrupts are on CPU " +
                                       facts.irq_cpus + ")")
      << " (section \"The limit\").\n"
      << "- CPU: utime + stime of the backend process (all threads, from /proc/PID/stat) per GiB "
         "moved; for fio, its job's usr_cpu + sys_cpu. The harness's own CPU (the \"guest\") is "
         "listed separately. MB/s is 10^6 bytes per second.\n\n";

  auto value_of = [](const Workload& w) { return [&w](const Figure& f) { return f.value(w); }; };
  auto cpu_of = [](const Figure& f) { return f.cpu_per_gib(); };
  auto rounds_text = [&](const Point& pt) { return secs(pt.seconds) + " s x " + std::to_string(o.rounds); };

  out << "## Throughput\n\n"
      << "| workload | QD | unit | s x rounds | moss-blk | qsd | qsd io_uring | fio (limit) | moss / qsd | moss / qsd io_uring | moss / fio |\n"
      << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Point& pt : disk.points) {
    std::string k = pt.key();
    auto v = value_of(*pt.w);
    auto show = [&](const std::string& col) { return cell_text(stats_of(disk.cell(col, k), v), rate); };
    out << "| " << pt.w->label << " | " << pt.qd << " | " << pt.w->unit << " | " << rounds_text(pt) << " | " << show(kMoss)
        << " | " << show(kQsd) << " | " << show(kQsdU) << " | " << show(kFio) << " | "
        << ratio_text(disk.cell(kMoss, k), disk.cell(kQsd, k), v) << " | " << ratio_text(disk.cell(kMoss, k), disk.cell(kQsdU, k), v)
        << " | " << ratio_text(disk.cell(kMoss, k), disk.cell(kFio, k), v) << " |\n";
  }

  out << "\n## Backend CPU time per GiB moved (s/GiB)\n\n"
      << "| workload | QD | moss-blk | qsd | qsd io_uring | fio | moss / qsd | moss / qsd io_uring | harness (with moss-blk) |\n"
      << "|---|---|---|---|---|---|---|---|---|\n";
  auto f3 = [](double x) { return fmt(x, x < 10 ? 2 : 1); };
  for (const Point& pt : disk.points) {
    std::string k = pt.key();
    auto show = [&](const std::string& col) { return cell_text(stats_of(disk.cell(col, k), cpu_of), f3); };
    out << "| " << pt.w->label << " | " << pt.qd << " | " << show(kMoss) << " | " << show(kQsd) << " | " << show(kQsdU) << " | "
        << show(kFio) << " | " << ratio_text(disk.cell(kMoss, k), disk.cell(kQsd, k), cpu_of) << " | "
        << ratio_text(disk.cell(kMoss, k), disk.cell(kQsdU, k), cpu_of) << " | "
        << cell_text(stats_of(disk.cell(kMoss, k), [](const Figure& f) { return f.driver_cpu_per_gib(); }), f3) << " |\n";
  }

  if (!busy.points.empty()) {
    out << "\n## Beside one CPU-bound process (contended by design)\n\n"
        << "Not a clean figure, on purpose: the same peers and points, with one process of ours spinning on the CPU "
           "(a plain busy loop at the same priority, started before the point's rounds and killed after) during "
           "every peer's runs. The quiet criterion still applies to everything else. A backend that completes a "
           "whole batch of requests per wake-up needs fewer hand-offs between processes, which is what a busy "
           "CPU makes expensive; \"kept\" is each peer's median here as a share of its quiet median above.\n\n"
        << "| workload | QD | unit | s x rounds | moss-blk | qsd | qsd io_uring | fio (limit) | moss / qsd | moss / qsd io_uring | moss / fio | busy loop's CPU |\n"
        << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const Point& pt : busy.points) {
      std::string k = pt.key();
      auto v = value_of(*pt.w);
      auto show = [&](const std::string& col) { return cell_text(stats_of(busy.cell(col, k), v), rate); };
      std::vector<double> load;
      for (const std::string& col : busy.columns) {
        if (const Cell* cl = busy.cell(col, k))
          for (const Run& r : *cl) load.push_back(r.during.load_child);
      }
      out << "| " << pt.w->label << " | " << pt.qd << " | " << pt.w->unit << " | " << rounds_text(pt) << " | " << show(kMoss)
          << " | " << show(kQsd) << " | " << show(kQsdU) << " | " << show(kFio) << " | "
          << ratio_text(busy.cell(kMoss, k), busy.cell(kQsd, k), v) << " | "
          << ratio_text(busy.cell(kMoss, k), busy.cell(kQsdU, k), v) << " | "
          << ratio_text(busy.cell(kMoss, k), busy.cell(kFio, k), v) << " | " << quiet::percent(median(load)) << " of the machine |\n";
      auto kept = [&](const std::string& col) {
        double b = stats_of(busy.cell(col, k), v).med, q = stats_of(disk.cell(col, k), v).med;
        return std::isnan(b) || std::isnan(q) || q == 0 ? std::string("n/a") : fmt(100 * b / q, 0) + "%";
      };
      out << "| " << pt.w->label << " | " << pt.qd << " | kept | | " << kept(kMoss) << " | " << kept(kQsd) << " | " << kept(kQsdU)
          << " | " << kept(kFio) << " | | | | |\n";
    }
  }

  out << "\n## Transport only: null backends\n\n"
      << "moss null: the moss-null worker (`devices/null/`: the worker runtime, vhost-user `Backend` and "
         "device-side rings with a device that parses each request and answers OK without I/O, with "
         "`--no-read-zeroes`); qsd null-co: "
         "`--blockdev driver=null-co,size=" << o.size << "` (bytes; read-zeroes off, its default) exported the same way. "
         "Neither touches a disk or the data, so every row "
         "is in requests per second, and CPU is given per request.\n\n"
      << "| workload | QD | s x rounds | moss null req/s | qsd null-co req/s | moss / qsd | CPU us/req moss null | CPU us/req qsd null-co |\n"
      << "|---|---|---|---|---|---|---|---|\n";
  auto per_s = [](const Figure& f) { return f.per_second(); };
  auto us_per_req = [](const Figure& f) { return f.cpu_us_per_op(); };
  auto f2 = [](double x) { return fmt(x, 2); };
  for (const Point& pt : null.points) {
    std::string k = pt.key();
    out << "| " << pt.w->label << " | " << pt.qd << " | " << rounds_text(pt) << " | "
        << cell_text(stats_of(null.cell(kMossNull, k), per_s), rate) << " | " << cell_text(stats_of(null.cell(kQsdNull, k), per_s), rate)
        << " | " << ratio_text(null.cell(kMossNull, k), null.cell(kQsdNull, k), per_s) << " | "
        << cell_text(stats_of(null.cell(kMossNull, k), us_per_req), f2) << " | "
        << cell_text(stats_of(null.cell(kQsdNull, k), us_per_req), f2) << " |\n";
  }

  // The limit's own spread: fio's rounds one by one, with the disk's time per request.
  out << "\n## The limit: fio's spread\n\n"
      << kFioFindings << "\n\n"
      << "fio's rounds in this run, with the block device's mean time per request (its read and write \"ticks\" "
         "over the requests it completed: queueing in the guest's block layer and the host's service time):\n\n"
      << "| section | workload | QD | fio's CPUs | round | rate | unit | disk's time per request (us) |\n"
      << "|---|---|---|---|---|---|---|---|\n";
  auto fio_rounds = [&](const Section& s, const char* name, const std::string& col, const std::string& cpus) {
    for (const Point& pt : s.points) {
      if (pt.w != &kRandRead) continue;
      const Cell* cl = s.cell(col, pt.key());
      if (cl == nullptr) continue;
      for (size_t i = 0; i < cl->size(); ++i) {
        const Run& r = (*cl)[i];
        double us = r.during.disk_requests > 0 ? 1000 * r.during.disk_ms / r.during.disk_requests : NAN;
        out << "| " << name << " | " << pt.w->label << " | " << pt.qd << " | " << cpus << " | " << i + 1 << " | "
            << rate(r.fig.value(*pt.w)) << (r.contended.empty() ? "" : kMark) << " | " << pt.w->unit << " | " << fmt(us, 0)
            << " |\n";
      }
    }
  };
  std::string fio_where = facts.fio_cpus.empty() ? "any" : facts.fio_cpus;
  fio_rounds(disk, "throughput", kFio, fio_where);
  fio_rounds(busy, "busy", kFio, fio_where);
  for (const std::string& col : placement.columns) fio_rounds(placement, "fio's CPU", col, col);
  if (!placement.points.empty()) {
    out << "\nfio at the same points with its CPU chosen (the disk's interrupts are on CPU " << facts.irq_cpus << "), "
        << placement.points[0].seconds << " s rounds, taking turns:\n\n"
        << "| workload | QD |";
    for (const std::string& col : placement.columns) out << " fio on " << col << " |";
    out << "\n|---|---|";
    for (size_t i = 0; i < placement.columns.size(); ++i) out << "---|";
    out << "\n";
    for (const Point& pt : placement.points) {
      out << "| " << pt.w->label << " | " << pt.qd << " |";
      for (const std::string& col : placement.columns)
        out << " " << cell_text(stats_of(placement.cell(col, pt.key()), value_of(*pt.w)), rate) << " |";
      out << "\n";
    }
  }

  // What else the machine did, point by point (every peer and round of the point).
  out << "\n## Quiet check\n\n"
      << "Per point, over every peer's rounds: the others' CPU share just before the runs (max) and during them "
         "(median and max), the most steal, the most MiB the disk moved beyond the run's own (read rows), and the other runnable tasks seen just before a run (max, from /proc/loadavg). "
         "The kernel threads that carry block I/O (kblockd, dio/*, ksoftirqd) and the time in interrupts do the "
         "bench's own I/O, mostly, and are shown apart, not counted as others'. The bench's own share is the "
         "backend's, the harness's and fio's; in the busy section the busy loop is not in it.\n\n"
      << "| section | workload | QD | others before (max) | others during (median, max) | steal (max) | block I/O kernel threads; interrupts (median) | others' disk MiB (max) | runnable before (max) | bench's own CPU (median) | retries | contended runs | pass over the file before it (MB/s) |\n"
      << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  auto quiet_rows = [&](const Section& s, const char* name) {
    for (const Point& pt : s.points) {
      std::vector<double> before, during, steal, own, io_kernel, irq;
      double other_disk = NAN;
      int runnable = -1, retries = 0, bad = 0;
      for (const std::string& col : s.columns) {
        const Cell* cl = s.cell(col, pt.key());
        if (cl == nullptr) continue;
        for (const Run& r : *cl) {
          before.push_back(r.before.background);
          during.push_back(r.during.background);
          steal.push_back(std::max(r.before.steal, r.during.steal));
          own.push_back(r.during.ours);
          io_kernel.push_back(r.during.io_kernel);
          irq.push_back(r.during.irq);
          runnable = std::max(runnable, r.before.runnable);
          retries += r.attempts - 1;
          bad += !r.contended.empty();
          if (r.fig.ok && !pt.w->write && col != kMossNull && col != kQsdNull) {
            double x = (r.during.disk_bytes - r.fig.bytes) / kMiB;
            other_disk = std::isnan(other_disk) ? x : std::max(other_disk, x);
          }
        }
      }
      auto mx = [](const std::vector<double>& v) { return v.empty() ? NAN : *std::max_element(v.begin(), v.end()); };
      out << "| " << name << " | " << pt.w->label << " | " << pt.qd << " | " << quiet::percent(mx(before)) << " | "
          << quiet::percent(median(during)) << ", " << quiet::percent(mx(during)) << " | " << quiet::percent(mx(steal)) << " | "
          << quiet::percent(median(io_kernel)) << "; " << quiet::percent(median(irq)) << " | "
          << (std::isnan(other_disk) ? std::string("-") : fmt(other_disk, 1)) << " | " << (runnable < 0 ? "-" : std::to_string(runnable))
          << " | " << quiet::percent(median(own)) << " | " << retries << " | " << bad << " | "
          << (s.warm_mbps.count(pt.key()) ? fmt(s.warm_mbps.at(pt.key())) : std::string("-")) << " |\n";
    }
  };
  quiet_rows(disk, "throughput");
  quiet_rows(busy, "busy");
  quiet_rows(null, "transport");
  quiet_rows(placement, "fio's CPU");

  if (!contended_lines.empty()) {
    out << "\n## Contended runs\n\n";
    for (const std::string& l : contended_lines) out << l << "\n";
  }
  bool errors = false;
  auto failures = [&](const Section& s) {
    for (const auto& [col, rows] : s.cells) {
      for (const auto& [k, cell] : rows) {
        for (size_t i = 0; i < cell.size(); ++i) {
          if (cell[i].fig.ok) continue;
          if (!errors) out << "\n## Rows that failed\n\n";
          errors = true;
          out << "- " << col << " " << k << " round " << i + 1 << ": " << cell[i].fig.error << "\n";
        }
      }
    }
  };
  failures(disk);
  failures(busy);
  failures(null);
  failures(placement);
  (void)failed;
}

int usage() {
  std::fprintf(stderr,
               "usage: blk_bench --out FILE [--dir DIR] [--where TEXT] [--size-mib N]\n"
               "                 [--seconds S] [--short-seconds S] [--null-short-seconds S] [--rounds N]\n"
               "                 [--retries N] [--retry-budget N] [--wait-budget S]\n"
               "                 [--max-background PERCENT] [--max-steal PERCENT]\n"
               "                 [--fio-cpus any|irq|away|LIST] [--no-busy] [--no-placement]\n"
               "                 [--placement-seconds S] [--stop-when-contended]\n"
               "                 [--only disk|null]\n");
  return 2;
}

// fio's CPUs for --fio-cpus auto: those that do not take the disk's completion interrupts.
std::string fio_cpus_away_from(const std::string& irq_cpus) {
  if (irq_cpus.empty() || irq_cpus.find_first_of("-,") != std::string::npos) return "";
  long n = ::sysconf(_SC_NPROCESSORS_ONLN), irq = std::atol(irq_cpus.c_str());
  std::string out;
  for (long i = 0; i < n; ++i) {
    if (i != irq) out += (out.empty() ? "" : ",") + std::to_string(i);
  }
  return out;
}

}  // namespace
}  // namespace moss::bench

int main(int argc, char** argv) {
  using namespace moss::bench;
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--out") o.out = val();
    else if (a == "--dir") o.dir = val();
    else if (a == "--seconds") o.seconds = std::atof(val().c_str());
    else if (a == "--short-seconds") o.short_seconds = std::atof(val().c_str());
    else if (a == "--null-short-seconds") o.null_short_seconds = std::atof(val().c_str());
    else if (a == "--rounds") o.rounds = std::atoi(val().c_str());
    else if (a == "--retries") o.retries = std::atoi(val().c_str());
    else if (a == "--retry-budget") o.retry_budget = std::atoi(val().c_str());
    else if (a == "--wait-budget") o.wait_budget = std::atof(val().c_str());
    else if (a == "--max-background") o.criterion.max_background = std::atof(val().c_str()) / 100;
    else if (a == "--max-steal") o.criterion.max_steal = std::atof(val().c_str()) / 100;
    else if (a == "--fio-cpus") o.fio_cpus = val();
    else if (a == "--no-busy") o.busy = false;
    else if (a == "--stop-when-contended") o.stop_when_contended = true;
    else if (a == "--no-placement") o.placement = false;
    else if (a == "--placement-seconds") o.placement_seconds = std::atof(val().c_str());
    else if (a == "--size-mib") o.size = std::strtoull(val().c_str(), nullptr, 10) * kMiB;
    else if (a == "--where") o.where = val();
    else if (a == "--only") o.only = val();
    else return usage();
  }
  if (o.out.empty() || o.seconds <= 0 || o.short_seconds <= 0 || o.null_short_seconds <= 0 || o.rounds < 1 ||
      o.size < 64 * kMiB)
    return usage();
  ::signal(SIGPIPE, SIG_IGN);
  auto t_start = Clock::now();

  std::string fs = fs_name(o.dir);
  if (fs == "tmpfs") {
    std::fprintf(stderr, "blk_bench: %s is tmpfs, which has no O_DIRECT: give --dir on a real filesystem\n", o.dir.c_str());
    return 1;
  }
  auto dir = moss::harness::TempDir::create(o.dir);
  if (!dir.ok()) {
    std::fprintf(stderr, "blk_bench: %s\n", dir.error().message.c_str());
    return 1;
  }
  std::string file = dir->path() + "/disk.img";
  std::fprintf(stderr, "blk_bench: writing a %llu MiB image at %s (%s)\n", static_cast<unsigned long long>(o.size / kMiB),
               file.c_str(), fs.c_str());
  if (auto e = make_image(file, o.size)) {
    std::fprintf(stderr, "blk_bench: %s\n", e->c_str());
    return 1;
  }

  quiet::Probe probe(file);
  Facts facts;
  facts.file = file;
  facts.fs = fs;
  facts.disk = probe.disk();
  facts.irq_cpus = probe.disk_irq_cpus();
  facts.extents = extent_count(file);
  facts.cached_before = cached_share(file, o.size);
  // Warm the disk's cache until a pass over the file is as fast as the one before (within 10%).
  auto warm = [&] { return warm_file(file, o.size); };
  for (int i = 0; i < 5; ++i) {
    facts.warm_passes.push_back(warm());
    size_t n = facts.warm_passes.size();
    if (n >= 2 && std::fabs(facts.warm_passes[n - 1] - facts.warm_passes[n - 2]) <= 0.1 * facts.warm_passes[n - 2]) break;
  }
  for (double mbps : facts.warm_passes) std::fprintf(stderr, "blk_bench: a pass over the file: %.0f MB/s\n", mbps);
  if (!facts.disk.empty()) {
    std::string whole = facts.disk;
    if (::access(("/sys/block/" + whole).c_str(), F_OK) != 0) {
      while (!whole.empty() && std::isdigit(static_cast<unsigned char>(whole.back()))) whole.pop_back();
    }
    facts.scheduler = read_line("/sys/block/" + whole + "/queue/scheduler");
  }
  if (o.fio_cpus == "away") facts.fio_cpus = fio_cpus_away_from(facts.irq_cpus);
  else if (o.fio_cpus == "irq") facts.fio_cpus = facts.irq_cpus;
  else if (o.fio_cpus != "any") facts.fio_cpus = o.fio_cpus;
  std::fprintf(stderr, "blk_bench: disk %s (interrupts on CPU %s), %ld extents; fio on CPU %s\n", facts.disk.c_str(),
               facts.irq_cpus.c_str(), facts.extents, facts.fio_cpus.empty() ? "any" : facts.fio_cpus.c_str());

  Runner runner(o, probe);
  Section disk, busy, null, placement;
  disk.columns = busy.columns = {kMoss, kQsd, kQsdU, kFio};
  null.columns = {kMossNull, kQsdNull};
  // The points that carry promises get the long rounds.
  auto promised = [](const Workload* w, uint32_t qd) { return w == &kRandRead || (w == &kRandWrite && qd == 32); };
  for (const Workload* w : kWorkloads) {
    for (uint32_t qd : {1u, 32u}) {
      disk.points.push_back({w, qd, promised(w, qd) ? o.seconds : o.short_seconds, promised(w, qd)});
      null.points.push_back({w, qd, w == &kRandRead ? o.seconds : o.null_short_seconds, w == &kRandRead});
    }
  }
  if (o.busy) busy.points = {{&kRandRead, 32, o.seconds, true}, {&kRandRead, 1, o.short_seconds}};

  if (o.only.empty() || o.only == "disk") {
    BackendOptions mb;
    mb.kind = BackendKind::kMossBlk;
    mb.disk = file;
    BackendOptions q;
    q.kind = BackendKind::kQsd;
    q.disk = file;
    q.direct = true;
    // The peers stay up and take turns on one image, which moss-blk holds locked as a writer
    // (one writer per disk, base/disk_lock.h): qsd opens it without its own image locks. Locks
    // are taken at open; nothing on the I/O path changes.
    q.locking = false;
    BackendOptions qu = q;
    qu.io_uring = true;
    std::vector<Peer> peers;
    peers.push_back(process_peer(kMoss, mb, o.size));
    peers.push_back(process_peer(kQsd, q, o.size));
    peers.push_back(process_peer(kQsdU, qu, o.size));
    std::string fio_cpus = facts.fio_cpus;
    peers.push_back({kFio, [&, fio_cpus](const Workload& w, uint32_t qd, double s) {
                       return run_fio(w, qd, s, file, o.size, fio_cpus);
                     }});
    runner.run(disk, peers, "disk", warm);
    if (o.busy) {
      for (const Point& pt : busy.points) {
        Section one;
        one.points = {pt};
        pid_t spinner = start_spinner();
        probe.set_load_pid(spinner);
        runner.run(one, peers, "busy", warm);
        probe.set_load_pid(-1);
        stop_child(spinner);
        for (auto& [col, rows] : one.cells) busy.cells[col][pt.key()] = std::move(rows[pt.key()]);
        busy.warm_mbps[pt.key()] = one.warm_mbps[pt.key()];
      }
    }
    for (Peer& p : peers) p.stop();
    // Where fio runs against where the disk's interrupts land: the limit's own spread.
    if (o.placement && !facts.irq_cpus.empty() && facts.irq_cpus.find_first_of("-,") == std::string::npos) {
      std::string away = fio_cpus_away_from(facts.irq_cpus);
      std::vector<Peer> fios;
      std::vector<std::string> choices = {facts.irq_cpus};
      if (!away.empty()) choices.push_back(away);
      choices.push_back("");  // Any.
      for (const std::string& cpus : choices) {
        fios.push_back({cpus.empty() ? "any CPU" : "CPU " + cpus, [&, cpus](const Workload& w, uint32_t qd, double s) {
                          return run_fio(w, qd, s, file, o.size, cpus);
                        }});
      }
      for (const Peer& f : fios) placement.columns.push_back(f.column);
      placement.points = {{&kRandRead, 32, o.placement_seconds}, {&kRandRead, 1, o.placement_seconds}};
      runner.run(placement, fios, "fio", warm);
    }
  } else {
    disk.points.clear();
    busy.points.clear();
  }
  if (o.only.empty() || o.only == "null") {
    BackendOptions qn;
    qn.kind = BackendKind::kQsd;
    qn.null_bytes = o.size;
    std::vector<Peer> peers;
    peers.push_back(moss_null_peer(kMossNull, dir->path(), o.size));
    peers.push_back(process_peer(kQsdNull, qn, o.size));
    runner.run(null, peers, "null");
    for (Peer& p : peers) p.stop();
  } else {
    null.points.clear();
  }

  facts.cached_after = cached_share(file, o.size);
  facts.retries = runner.retries_used();
  facts.stopped = runner.stopped();
  facts.wall = std::chrono::duration<double>(Clock::now() - t_start).count();
  write_results(o, facts, disk, busy, null, placement);
  std::fprintf(stderr, "blk_bench: results in %s\n", o.out.c_str());
  return 0;
}
