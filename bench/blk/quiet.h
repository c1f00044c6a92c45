// Is the machine quiet? What else ran while a timed run ran?
//
// A bench run on a shared machine measures the machine's load as much as the code. These
// probes tell the two apart, from outside the processes being measured:
//   - CPU: /proc/stat's busy time of all CPUs over a window, minus the CPU time of the bench's
//     own process tree (this process, its reaped children such as fio, and its live
//     descendants such as the backend under test), as a share of the machine's capacity
//     (window x CPUs). What is left is everything else: other programs, and kernel threads.
//   - steal: time the hypervisor gave our virtual CPUs to something else.
//   Kernel threads that carry block I/O (kblockd, the dio completion workqueue, ksoftirqd) do
//   the bench's own I/O's work and are counted apart, not as background.
//   - the disk: bytes the block device under the file moved beyond the bench's own.
//   - runnable: /proc/loadavg's count of runnable tasks, minus the reader, while the bench's
//     own processes are idle (before a run).
// The busiest other processes of a window are named, so a contended point says why.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moss::bench::quiet {

// What one window saw. Shares are of the machine's whole CPU capacity (1.0 = every CPU busy).
struct Window {
  double seconds = 0;
  double ticks = 0;       // Clock ticks of all CPUs in the window (USER_HZ x seconds x CPUs).
  double background = 0;  // CPU share of everything outside the bench's process tree.
  double irq = 0;         // CPU share in hard and soft interrupts (tick-sampled; mostly our I/O).
  double steal = 0;       // Share of the CPUs' time the hypervisor ran something else.
  double ours = 0;        // CPU share of the bench's process tree.
  double io_kernel = 0;   // CPU share of the kernel threads that carry block I/O (kblockd, dio/*,
                          // ksoftirqd): the bench's I/O, mostly; not counted as background.
  double load_child = 0;  // CPU share of the bench's deliberate load (see Probe::load_pid).
  double disk_bytes = 0;     // Bytes the file's block device read and wrote.
  double disk_requests = 0;  // Reads and writes it completed,
  double disk_ms = 0;        // and the milliseconds they spent in it, summed (field "ticks").
  int runnable = -1;         // Other runnable tasks at the window's end (/proc/loadavg), -1: not read.
  std::string busiest;       // "cc1plus 41%, kworker/1:2 3%": the other processes that took most.
};

// The criterion a run must meet to count as clean.
struct Criterion {
  double max_background = 0.03;  // Share of the machine's CPU.
  double max_steal = 0.03;
  double max_other_disk = 0.02;  // Other bytes on the disk, as a share of the run's own (read rows only).
  // CPU time is counted in clock ticks (10 ms): a 0.3 s sample of 2 CPUs has 60, so one stray
  // tick of a daemon is 1.7%. A share over the limit counts only from this many ticks on (a
  // process busy through the sample would take 30).
  double min_ticks = 3;
  bool others_busy(const Window& w) const { return w.background > max_background && w.background * w.ticks >= min_ticks; }
  bool stolen(const Window& w) const { return w.steal > max_steal && w.steal * w.ticks >= min_ticks; }
};

class Probe {
 public:
  // `disk_file`: a file on the block device whose requests are counted ("" for none).
  explicit Probe(const std::string& disk_file);

  // The block device counted ("vda"), or "" if none was found.
  const std::string& disk() const { return disk_; }
  // The CPUs that take the disk's completion interrupts ("1"), or "" if unknown.
  const std::string& disk_irq_cpus() const { return irq_cpus_; }

  // A descendant whose CPU is deliberate load: counted in Window::load_child, not background.
  void set_load_pid(pid_t pid) { load_pid_ = pid; }

  // Opens a window now; `close` ends it.
  void open();
  Window close();

  // Samples `sample_ms` windows until one has background and steal within `c`, for at most
  // `max_wait_ms` (at least one sample). Returns the last sample.
  Window wait_quiet(const Criterion& c, int sample_ms, int max_wait_ms);

 private:
  struct Stat {
    uint64_t busy = 0, irq = 0, steal = 0, total = 0;  // Clock ticks, all CPUs.
  };
  struct Proc {
    pid_t ppid = 0;
    uint64_t ticks = 0;           // utime + stime.
    uint64_t children_ticks = 0;  // cutime + cstime (reaped children).
    std::string comm;
  };
  struct Snapshot {
    Stat stat;
    std::map<pid_t, Proc> procs;
    uint64_t disk_sectors = 0, disk_requests = 0, disk_ms = 0;
    double wall = 0;
  };
  Snapshot take() const;

  std::string disk_, disk_stat_path_, irq_cpus_;
  pid_t load_pid_ = -1;
  Snapshot start_;
};

// "3.1%"
std::string percent(double share);

}  // namespace moss::bench::quiet
