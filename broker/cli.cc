#include "broker/cli.h"

#include "broker/control.h"
#include "devices/modules.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace moss::cli {

namespace {

constexpr const char* kRunSynopsis =
    "usage: moss run [--kernel FILE] [--initrd FILE|none] [--append ARGS] [--mem SIZE] [--cpus N]\n"
    "                [--disk PATH[,ro]]... [--vhost-user-blk SOCKET[,peer-uid=N]]... [--name NAME]\n"
    "                [--stats FILE] [--vsock-socket PATH] [--console FILE] [--no-sandbox]\n"
    "                [-t] [--env K=V]... [--workdir DIR] [--boot-timeout SECONDS] [-- CMD ARGS...]\n"
    "       moss run --from SPORE [--store DIR] [--disk PATH[,ro]]... [--clock realtime] [output options]\n"
    "                [-- CMD ARGS...]\n";

constexpr const char* kRunText =
    "moss run -- CMD boots a VM and runs CMD in it through the guest agent, as if it ran here:\n"
    "stdin, stdout and stderr are this process's, and moss exits with CMD's status (128+N if\n"
    "signal N ended it). -t gives CMD a pseudo-terminal (an interactive shell: moss run -t -- sh).\n"
    "--env and --workdir set its environment and working directory. If the guest's agent has not\n"
    "connected --boot-timeout seconds after the start (default 300; 0: no limit), moss stops the\n"
    "VM and fails. The guest console goes to\n"
    "--console FILE if given (appended; a regular file, a terminal or other character device, or\n"
    "a FIFO that a reader has open); otherwise it is kept, and its last lines are printed if the VM\n"
    "fails. Without a command the VM runs with its console on stdout until it powers off or\n"
    "is stopped. SIZE takes a K, M or G suffix (no suffix: MiB); the default is 512M.\n"
    "--kernel and --initrd must be regular files.\n"
    "Each --disk (a file or block device, served by its own moss-blk worker) and each\n"
    "--vhost-user-blk (a running vhost-user-blk backend) is a virtio-blk disk, /dev/vda first.\n"
    "The backend gets the guest's memory, so moss refuses one that runs as another user than you\n"
    "or root, unless ,peer-uid=N names that user's id.\n"
    "--name gives the VM a control socket in the runtime directory ($MOSS_RUNTIME_DIR, else\n"
    "$XDG_RUNTIME_DIR/moss): moss ls lists named VMs, moss stats prints one's figures as\n"
    "JSON, moss stop stops it in order and waits until it has ended, moss pause parks its\n"
    "vCPUs (the guest's clock and devices keep running) until moss resume.\n"
    "--stats FILE writes timing and memory figures as JSON when the VM ends (FILE must be a\n"
    "regular file or not exist; it is replaced whole).\n"
    "Every process moss starts runs in a sandbox (namespaces, an empty root, no capabilities,\n"
    "a seccomp allowlist); --no-sandbox turns that off, for debugging moss only.\n"
    "Every VM has a virtio-vsock device with a CID none of your other running VMs holds, in hybrid\n"
    "mode: host programs connect to its Unix socket (--vsock-socket, default: in the runtime\n"
    "directory, see moss stats) and send \"CONNECT <port>\\n\"; the guest's connections to host port\n"
    "N reach the socket PATH_N.\n"
    "moss run --from SPORE continues the VM a spore holds (moss spore create, moss suspend) instead\n"
    "of booting one, then runs CMD in it through its agent; --disk names the spore's disks again\n"
    "(see moss restore --help).\n"
    "Exit status: CMD's; 2 for bad usage; 125 when moss itself fails (one sentence on stderr).\n";

constexpr const char* kSporeStoreText =
    "A spore is a directory (0700) holding its manifest (0600); its memory lives in a chunk store\n"
    "that spores share: $XDG_DATA_HOME/moss/store, else ~/.local/share/moss/store, or --store DIR\n"
    "(directories 0700, files 0600: they hold guest RAM).\n";
constexpr const char* kExecText =
    "usage: moss exec NAME [-t] [--env K=V]... [--workdir DIR] -- CMD ARGS...\n\n"
    "Runs CMD in the running VM NAME (moss run --name NAME) through its guest agent, exactly as\n"
    "moss run -- CMD does: stdin, stdout and stderr are this process's, signals go to CMD, -t\n"
    "gives it a pseudo-terminal, --env and --workdir set its environment and working directory.\n"
    "It waits up to 30 s for the guest's agent to listen (a VM still booting).\n"
    "The VM is one started by you, found in the runtime directory ($MOSS_RUNTIME_DIR, else\n"
    "$XDG_RUNTIME_DIR/moss, else /run/moss for root, else /tmp/moss-UID).\n"
    "Exit status: CMD's (128+N if signal N ended it); 2 for bad usage; 125 when there is no VM\n"
    "of that name, its agent cannot be reached, or the connection broke (one sentence on stderr).\n";

constexpr const char* kControlText =
    "The VM is one started with moss run --name NAME by you, found in the runtime directory\n"
    "($MOSS_RUNTIME_DIR, else $XDG_RUNTIME_DIR/moss, else /run/moss for root, else /tmp/moss-UID).\n"
    "Exit status: 0; 2 for bad usage; 125 when no VM of that name is running or it could not\n"
    "do it (one sentence on stderr).\n";

}  // namespace

std::string usage() {
  return std::string(kRunSynopsis) +
         "       moss exec NAME [-t] [--env K=V]... [--workdir DIR] -- CMD ARGS...\n"
         "       moss ls | moss stats NAME | moss stop NAME | moss pause NAME | moss resume NAME\n"
         "       moss device blk|vsock ARGS... (moss device KIND --help)\n"
         "       moss suspend NAME --out SPORE [--keep-running] [--store DIR]\n"
         "       moss restore SPORE --name NAME [--disk PATH[,ro]]... [--clock realtime] [--store DIR]\n"
         "       moss spore create SPORE [run options] [--store DIR]\n"
         "       moss inspect SPORE | moss pack SPORE -o FILE | moss unpack FILE -o DIR | moss store gc\n"
         "       moss --help | --version | moss VERB --help\n"
         "\n" +
         kRunText +
         "moss device blk|vsock runs a device worker on its own, as a vhost-user backend for QEMU,\n"
         "crosvm or another moss.\n";
}

std::string usage(const std::string& topic) {
  if (std::string u = spore_usage(topic); !u.empty()) return u;
  if (topic == "run") return std::string(kRunSynopsis) + "\n" + kRunText;
  if (topic == "exec") return kExecText;
  if (topic == "ls") {
    return "usage: moss ls\n\nLists your named VMs that are running (moss run --name NAME): name, state, uptime,\n"
           "vCPUs, memory, the resident memory of all its processes, disks.\n" +
           std::string(kControlText);
  }
  if (topic == "stats") {
    return "usage: moss stats NAME\n\nPrints the VM NAME's figures as JSON: state, uptime, vCPUs, memory, each process's\n"
           "resident memory and CPU time, disks and their request counts, its vsock CID and socket.\n" +
           std::string(kControlText);
  }
  if (topic == "stop") {
    return "usage: moss stop NAME\n\nStops the VM NAME in order (as SIGTERM to its moss run would) and waits until it has\n"
           "ended.\n" +
           std::string(kControlText);
  }
  if (topic == "pause" || topic == "resume") {
    return "usage: moss " + topic + " NAME\n\nmoss pause parks the VM NAME's vCPUs (its clock and devices keep running) and\n"
           "returns once every one is parked; moss resume lets them run again.\n" +
           std::string(kControlText);
  }
  if (topic == "suspend") {
    return "usage: moss suspend NAME --out SPORE [--keep-running] [--store DIR]\n\n"
           "Captures the running VM NAME (moss run --name NAME) into the spore SPORE, which must not\n"
           "exist: its RAM, every vCPU, the VM's clock and interrupt controllers, and every device's\n"
           "state. The VM then ends (its moss run exits 0, saying where the spore is), or runs on with\n"
           "--keep-running. A device that cannot save its state (a vhost-user backend without\n"
           "DEVICE_STATE) makes it fail before anything is paused; any failure leaves no spore and the\n"
           "VM running. Disks are not in the spore: it records each disk's size and identity.\n" +
           std::string(kSporeStoreText) +
           "Exit status: 0; 2 for bad usage; 125 when it fails (one sentence on stderr).\n";
  }
  if (topic == "restore") {
    return "usage: moss restore SPORE --name NAME [--disk PATH[,ro]]... [--clock realtime] [--store DIR]\n"
           "                    [--stats FILE] [--vsock-socket PATH] [--console FILE] [--no-sandbox]\n\n"
           "Continues the VM the spore SPORE holds, as the named VM NAME, with its console on stdout\n"
           "(or --console FILE) until it powers off or is stopped, like moss run --name. Before the\n"
           "guest runs an instruction, the spore is checked (its version, every chunk's hash) and so is\n"
           "this host (its architecture, every CPUID feature and KVM capability the spore's guest was\n"
           "given, a TSC frequency KVM can keep): each refusal is one sentence. Disks are not in the\n"
           "spore: give each of its disks with --disk, in its order; a disk whose size or identity\n"
           "differs from what the spore recorded is refused (moss never opens a path it read from a\n"
           "spore). The guest gets a new vsock CID and a new generation; its monotonic clock continues\n"
           "where it stopped, and --clock realtime steps its clock by the time the spore slept.\n" +
           std::string(kSporeStoreText) +
           "Exit status: as moss run's; 2 for bad usage; 125 when moss fails (one sentence on stderr).\n";
  }
  if (topic == "spore") {
    return "usage: moss spore create SPORE [run options] [--store DIR]\n\n"
           "Boots a VM as moss run would with the same options (no --name, no command), waits until\n"
           "its guest agent is up, captures it into the spore SPORE, and stops it: moss run --from\n"
           "SPORE -- CMD then starts from there.\n" +
           std::string(kSporeStoreText) +
           "Exit status: 0; 2 for bad usage; 125 when it fails (one sentence on stderr).\n";
  }
  if (topic == "device") {
    return "usage: moss device blk|vsock ARGS...\n"
           "       moss device KIND --help\n\n"
           "Runs a device worker on its own, as a vhost-user backend for QEMU, crosvm or another moss:\n"
           "moss device blk is moss-blk (a virtio-blk disk), moss device vsock is moss-vsock (hybrid\n"
           "virtio-vsock). ARGS are the worker's own; moss device KIND --help lists them.\n";
  }
  return usage();
}

Result<uint64_t> parse_size(const std::string& text) {
  if (text.empty() || text[0] < '0' || text[0] > '9') return make_error("'" + text + "' is not a size (try 512M or 2G)");
  errno = 0;
  char* end = nullptr;
  unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  if (errno == ERANGE) return make_error("the size '" + text + "' is too large");
  std::string suffix(end);
  unsigned shift;
  if (suffix.empty() || suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
  else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
  else return make_error("'" + text + "' is not a size (try 512M or 2G)");
  if (n > (~0ull >> shift)) return make_error("the size '" + text + "' is too large");
  return static_cast<uint64_t>(n) << shift;
}

Result<Disk> parse_disk(const std::string& text) {
  Disk d;
  d.path = text;
  for (const char* suffix : {",ro", ",readonly"}) {
    std::string s(suffix);
    if (d.path.size() >= s.size() && d.path.compare(d.path.size() - s.size(), s.size(), s) == 0) {
      d.path.resize(d.path.size() - s.size());
      d.readonly = true;
      break;
    }
  }
  if (d.path.empty()) return make_error("--disk needs a file or block device path");
  return d;
}

Result<DeviceArg> parse_device(const std::string& text) {
  size_t comma = text.find(',');
  DeviceArg d{text.substr(0, comma), comma == std::string::npos ? std::string() : text.substr(comma + 1)};
  if (d.kind.empty()) return make_error("--device needs KIND[,OPTIONS]");
  if (device::find(d.kind) == nullptr) return make_error("--device " + d.kind + ": no such kind of device");
  return d;
}

Result<Disk> parse_vhost_user_disk(const std::string& text) {
  Disk d;
  d.vhost_user = true;
  d.path = text;
  static const std::string kPeerUid = ",peer-uid=";
  if (size_t at = text.rfind(kPeerUid); at != std::string::npos) {
    std::string uid = text.substr(at + kPeerUid.size());
    errno = 0;
    char* end = nullptr;
    unsigned long long n = std::strtoull(uid.c_str(), &end, 10);
    if (uid.empty() || uid[0] < '0' || uid[0] > '9' || *end != '\0' || errno == ERANGE || n >= 0xffffffffull) {
      return make_error("--vhost-user-blk " + text + ": peer-uid needs a numeric user id, not '" + uid + "'");
    }
    d.peer_uid = static_cast<uint32_t>(n);
    d.path.resize(at);
  }
  if (d.path.empty()) return make_error("--vhost-user-blk needs the backend's socket path");
  return d;
}

namespace {

Result<uint32_t> parse_cpus(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) return make_error("--cpus needs a number, not '" + text + "'");
  if (n < 1) return make_error("--cpus must be at least 1");
  if (n > 4096) return make_error("--cpus " + text + " is more vCPUs than any KVM host allows");
  return static_cast<uint32_t>(n);
}

// --boot-timeout: whole seconds, at most a day (0: no limit).
Result<uint32_t> parse_seconds(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || text[0] < '0' || text[0] > '9' || *end != '\0' || errno == ERANGE || n > 86400) {
    return make_error("--boot-timeout needs whole seconds from 0 to 86400, not '" + text + "'");
  }
  return static_cast<uint32_t>(n);
}

// -t, --env K=V and --workdir DIR at args[*i] (a command's options, for run and exec): false
// if args[*i] is none of them; *i moves past a value.
Result<bool> parse_command_option(const std::vector<std::string>& args, size_t* i, RunOptions* o) {
  const std::string& a = args[*i];
  auto value = [&](const char* name) -> Result<std::string> {
    if (*i + 1 >= args.size()) return make_error(std::string(name) + " needs a value");
    return args[++*i];
  };
  if (a == "-t" || a == "--tty") {
    o->tty = true;
  } else if (a == "--env") {
    MOSS_TRY(std::string v, value("--env"));
    size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) return make_error("--env needs KEY=VALUE, not '" + v + "'");
    o->env.push_back(v);
  } else if (a == "--workdir") {
    MOSS_TRY(o->workdir, value("--workdir"));
    if (o->workdir.empty() || o->workdir[0] != '/') return make_error("--workdir needs an absolute path in the guest");
  } else {
    return false;
  }
  return true;
}

Result<Command> parse_exec(const std::vector<std::string>& args) {
  Command c;
  c.verb = Command::Verb::kExec;
  if (args.size() < 2 || args[1].empty() || args[1][0] == '-') {
    if (args.size() >= 2 && (args[1] == "--help" || args[1] == "-h")) {
      c.verb = Command::Verb::kHelp;
      c.help_topic = "exec";
      return c;
    }
    return make_error("moss exec needs the name of a running VM: moss exec NAME -- CMD ARGS...");
  }
  c.vm_name = args[1];
  MOSS_TRY_VOID(control::check_name(c.vm_name));
  for (size_t i = 2; i < args.size(); i++) {
    if (args[i] == "--") {
      c.run.has_command = true;
      c.run.command.assign(args.begin() + static_cast<long>(i) + 1, args.end());
      if (c.run.command.empty()) return make_error("'--' must be followed by the command to run in the guest");
      return c;
    }
    if (args[i] == "--help" || args[i] == "-h") {
      c.verb = Command::Verb::kHelp;
      c.help_topic = "exec";
      return c;
    }
    MOSS_TRY(bool known, parse_command_option(args, &i, &c.run));
    if (!known) return make_error("unknown option '" + args[i] + "' for moss exec (see moss exec --help)");
  }
  return make_error("moss exec needs a command: moss exec " + c.vm_name + " -- CMD ARGS...");
}


// Which verb's options parse_run reads: they share moss run's, less what does not apply.
enum class RunMode { kRun, kRestore, kSporeCreate };

// What parse_run saw beyond the options themselves, for the checks that tie them together.
struct RunSeen {
  bool boot_timeout = false;
  bool clock = false;
  std::string machine_option;  // The first option that shapes a booted machine (a spore has its own).
};

// The value after option args[*i], which *i then points at.
Result<std::string> option_value(const std::vector<std::string>& args, size_t* i) {
  if (*i + 1 >= args.size()) return make_error(args[*i] + " needs a value");
  return args[++*i];
}

// One option that shapes the machine booted (kernel, memory, vCPUs, devices) at args[*i]:
// whether it is one.
Result<bool> parse_machine_option(const std::vector<std::string>& args, size_t* i, RunOptions* o) {
  const std::string& a = args[*i];
  if (a == "--kernel") {
    MOSS_TRY(o->kernel, option_value(args, i));
  } else if (a == "--initrd") {
    MOSS_TRY(o->initrd, option_value(args, i));
    if (o->initrd == "none") {
      o->no_initrd = true;
      o->initrd.clear();
    }
  } else if (a == "--append") {
    MOSS_TRY(o->append, option_value(args, i));
  } else if (a == "--mem") {
    MOSS_TRY(std::string v, option_value(args, i));
    MOSS_TRY(o->mem_bytes, parse_size(v));
  } else if (a == "--cpus") {
    MOSS_TRY(std::string v, option_value(args, i));
    MOSS_TRY(o->cpus, parse_cpus(v));
  } else if (a == "--disk" || a == "--vhost-user-blk") {
    MOSS_TRY(std::string v, option_value(args, i));
    MOSS_TRY(Disk d, a == "--disk" ? parse_disk(v) : parse_vhost_user_disk(v));
    o->disks.push_back(d);
  } else if (a == "--device") {
    MOSS_TRY(std::string v, option_value(args, i));
    MOSS_TRY(DeviceArg d, parse_device(v));
    o->devices.push_back(d);
  } else {
    return false;
  }
  return true;
}

// One option of the run itself (spore, name, command, console, sandbox, stats) at args[*i]:
// whether it is one.
Result<bool> parse_session_option(const std::vector<std::string>& args, size_t* i, RunMode mode, RunOptions* o,
                                  RunSeen* seen) {
  const std::string& a = args[*i];
  auto nonempty = [&](std::string* out, const char* what) -> Result<void> {
    MOSS_TRY(*out, option_value(args, i));
    if (out->empty()) return make_error(a + " needs " + what);
    return {};
  };
  if (a == "--from") {
    if (mode != RunMode::kRun) return make_error("--from is an option of moss run");
    MOSS_TRY_VOID(nonempty(&o->from, "a spore"));
  } else if (a == "--store") {
    MOSS_TRY_VOID(nonempty(&o->store_dir, "a directory"));
  } else if (a == "--clock") {
    MOSS_TRY(std::string v, option_value(args, i));
    if (v != "realtime") return make_error("--clock takes only 'realtime' (the default keeps the guest's clock continuous)");
    o->realtime_clock = true;
    seen->clock = true;
  } else if (a == "--name") {
    MOSS_TRY(o->name, option_value(args, i));
    MOSS_TRY_VOID(control::check_name(o->name));
  } else if (a == "-t" || a == "--tty" || a == "--env" || a == "--workdir") {
    MOSS_TRY(bool known, parse_command_option(args, i, o));
    MOSS_ASSERT(known);
  } else if (a == "--boot-timeout") {
    MOSS_TRY(std::string v, option_value(args, i));
    MOSS_TRY(o->boot_timeout_s, parse_seconds(v));
    seen->boot_timeout = true;
  } else if (a == "--vsock-socket") {
    MOSS_TRY_VOID(nonempty(&o->vsock_socket, "a path"));
  } else if (a == "--console") {
    MOSS_TRY_VOID(nonempty(&o->console_file, "a file"));
  } else if (a == "--no-sandbox") {
    o->no_sandbox = true;
  } else if (a == "--stats") {
    MOSS_TRY(o->stats_file, option_value(args, i));
  } else {
    return false;
  }
  return true;
}

// The options of a run that do not go together, or not with this verb.
Result<void> check_run_options(const RunOptions& o, RunMode mode, const RunSeen& seen) {
  if (!o.has_command && (o.tty || !o.env.empty() || !o.workdir.empty() || seen.boot_timeout)) {
    return make_error("-t, --env, --workdir and --boot-timeout apply to a command: add -- CMD ARGS...");
  }
  const bool from_spore = mode == RunMode::kRestore || !o.from.empty();
  if (from_spore && !seen.machine_option.empty()) {
    return make_error(seen.machine_option +
                      " does not apply to a spore: its machine (kernel, memory, vCPUs, devices) is the one it captured");
  }
  if (!from_spore && seen.clock) return make_error("--clock applies to a spore (moss restore, moss run --from)");
  if (mode == RunMode::kRun && o.from.empty() && !o.store_dir.empty()) {
    return make_error("--store applies to a spore (moss run --from SPORE)");
  }
  if (mode == RunMode::kRestore && o.has_command) {
    return make_error("moss restore takes no command (moss run --from SPORE -- CMD runs one)");
  }
  if (mode == RunMode::kSporeCreate) {
    if (o.has_command) return make_error("moss spore create takes no command: it captures the VM once its agent is up");
    if (!o.name.empty()) return make_error("moss spore create takes no --name (the VM it boots is captured, then stopped)");
  }
  return {};
}

Result<RunOptions> parse_run(const std::vector<std::string>& args, size_t i, RunMode mode = RunMode::kRun) {
  RunOptions o;
  RunSeen seen;
  for (; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--") {
      o.has_command = true;
      o.command.assign(args.begin() + static_cast<long>(i) + 1, args.end());
      if (o.command.empty()) return make_error("'--' must be followed by the command to run in the guest");
      break;
    }
    if (a == "--help" || a == "-h") {
      o.help = true;
      return o;
    }
    MOSS_TRY(bool machine, parse_machine_option(args, &i, &o));
    if (machine) {
      // A restore is given its disks again (checked against the spore); nothing else of a machine.
      if (seen.machine_option.empty() && a != "--disk") seen.machine_option = a;
      continue;
    }
    MOSS_TRY(bool session, parse_session_option(args, &i, mode, &o, &seen));
    if (!session) return make_error("unknown option '" + a + "' for moss run (see moss run --help)");
  }
  MOSS_TRY_VOID(check_run_options(o, mode, seen));
  return o;
}

// moss suspend NAME --out SPORE [--keep-running] [--store DIR]
Result<Command> parse_suspend(const std::vector<std::string>& args) {
  Command c;
  std::vector<std::string> positional;
  for (size_t i = 1; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      c.help_topic = "suspend";
      return c;
    }
    if (a == "--out" || a == "-o" || a == "--store") {
      if (i + 1 >= args.size() || args[i + 1].empty()) return make_error("moss suspend: " + a + " needs a value");
      (a == "--store" ? c.store_dir : c.spore_output) = args[++i];
    } else if (a == "--keep-running") {
      c.keep_running = true;
    } else if (!a.empty() && a[0] == '-') {
      return make_error("unknown option '" + a + "' for moss suspend (see moss suspend --help)");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 1) return make_error("moss suspend needs exactly one VM name");
  MOSS_TRY_VOID(control::check_name(positional[0]));
  if (c.spore_output.empty()) return make_error("moss suspend needs --out SPORE, the spore to write");
  c.verb = Command::Verb::kSuspend;
  c.vm_name = positional[0];
  return c;
}

// moss restore SPORE --name NAME ... and moss spore create SPORE ...: SPORE first, then run's
// options.
Result<Command> parse_spore_run(const std::vector<std::string>& args, size_t at, RunMode mode) {
  Command c;
  const std::string verb = mode == RunMode::kRestore ? "restore" : "spore create";
  const std::string topic = mode == RunMode::kRestore ? "restore" : "spore";
  std::string spore;
  if (at < args.size() && (args[at] == "--help" || args[at] == "-h")) {
    c.help_topic = topic;
    return c;
  }
  if (at >= args.size() || args[at].empty() || args[at][0] == '-') {
    return make_error("moss " + verb + " needs the spore first (moss " + verb + " SPORE ...)");
  }
  spore = args[at];
  MOSS_TRY(c.run, parse_run(args, at + 1, mode));
  if (c.run.help) {
    c.help_topic = topic;
    return c;
  }
  if (mode == RunMode::kRestore) {
    if (c.run.name.empty()) return make_error("moss restore needs --name NAME, the name of the VM it continues");
    c.run.from = spore;
    c.verb = Command::Verb::kRestore;
  } else {
    c.run.create_spore = spore;
    c.verb = Command::Verb::kSporeCreate;
  }
  return c;
}

// moss help [VERB]
Result<Command> parse_help(const std::vector<std::string>& args) {
  Command c;
  if (args.size() > 2) return make_error("moss help takes at most one verb (moss help run)");
  if (args.size() == 2) {
    c.help_topic = args[1] == "list" ? "ls" : args[1];
    static const char* const kTopics[] = {"run", "exec", "ls", "stats", "stop", "pause", "resume", "device", "suspend", "restore", "spore"};
    if (std::find(std::begin(kTopics), std::end(kTopics), c.help_topic) == std::end(kTopics) &&
        !is_spore_verb(c.help_topic)) {
      return make_error("moss help knows no verb '" + args[1] +
                        "' (this version has: run, exec, ls, stats, stop, pause, resume, device, suspend, restore, spore, inspect, pack, unpack, store)");
    }
  }
  return c;
}

// moss device KIND ARGS...
Result<Command> parse_device_verb(const std::vector<std::string>& args) {
  Command c;
  if (args.size() == 2 && (args[1] == "--help" || args[1] == "-h")) {
    c.help_topic = "device";
    return c;
  }
  std::string known;  // The kinds devices/modules.cc lists.
  for (std::string_view k : device::kinds()) known += (known.empty() ? "" : ", ") + std::string(k);
  if (args.size() < 2) return make_error("moss device needs a device kind (this version has: " + known + ")");
  if (device::find(args[1]) == nullptr) {
    return make_error("unknown device kind '" + args[1] + "' (this version has: " + known + ")");
  }
  c.verb = Command::Verb::kDevice;
  c.device = args[1];
  c.device_args.assign(args.begin() + 2, args.end());
  return c;
}

}  // namespace

Result<Command> parse(const std::vector<std::string>& args) {
  Command c;
  if (args.empty() || args[0] == "--help" || args[0] == "-h") return c;
  if (args[0] == "help") return parse_help(args);
  if (args[0] == "--version") {
    c.verb = Command::Verb::kVersion;
    return c;
  }
  auto is_help = [](const std::string& a) { return a == "--help" || a == "-h"; };
  if (args[0] == "run") {
    c.verb = Command::Verb::kRun;
    MOSS_TRY(c.run, parse_run(args, 1));
    if (c.run.help) {
      c.verb = Command::Verb::kHelp;
      c.help_topic = "run";
    }
    return c;
  }
  // The other verbs take no option but --help: a VM name never starts with '-'.
  if (args[0] == "ls" || args[0] == "list" || args[0] == "stats" || args[0] == "stop" || args[0] == "pause" ||
      args[0] == "resume") {
    std::string topic = args[0] == "list" ? "ls" : args[0];
    if (std::any_of(args.begin() + 1, args.end(), is_help)) {
      c.help_topic = topic;
      return c;
    }
  }
  if (args[0] == "ls" || args[0] == "list") {
    if (args.size() > 1) return make_error("moss ls takes no arguments");
    c.verb = Command::Verb::kList;
    return c;
  }
  if (args[0] == "stats" || args[0] == "stop" || args[0] == "pause" || args[0] == "resume") {
    if (args.size() != 2) return make_error("moss " + args[0] + " needs exactly one VM name");
    c.verb = args[0] == "stats"   ? Command::Verb::kStats
             : args[0] == "stop"  ? Command::Verb::kStop
             : args[0] == "pause" ? Command::Verb::kPause
                                  : Command::Verb::kResume;
    c.vm_name = args[1];
    return c;
  }
  if (args[0] == "device") return parse_device_verb(args);
  if (args[0] == "exec") return parse_exec(args);
  if (args[0] == "suspend") return parse_suspend(args);
  if (args[0] == "restore") return parse_spore_run(args, 1, RunMode::kRestore);
  if (args[0] == "spore") {
    if (args.size() >= 2 && (args[1] == "--help" || args[1] == "-h")) {
      c.help_topic = "spore";
      return c;
    }
    if (args.size() < 2 || args[1] != "create") return make_error("moss spore needs a subcommand: moss spore create SPORE");
    return parse_spore_run(args, 2, RunMode::kSporeCreate);
  }
  if (is_spore_verb(args[0])) return parse_spore_command(args);
  return make_error("unknown command '" + args[0] +
                    "' (this version has: run, exec, ls, stats, stop, pause, resume, device, suspend, restore, spore, inspect, pack, unpack, store; see moss --help)");
}

}  // namespace moss::cli
