#include "broker/cli.h"

#include <gtest/gtest.h>

namespace moss::cli {
namespace {

TEST(ParseSize, AcceptsSuffixesAndDefaultsToMiB) {
  EXPECT_EQ(*parse_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_size("2G"), 2ull << 30);
  EXPECT_EQ(*parse_size("1024"), 1ull << 30);
  EXPECT_EQ(*parse_size("65536K"), 64ull << 20);
}

TEST(ParseSize, RejectsGarbageAndOverflow) {
  EXPECT_FALSE(parse_size("").ok());
  EXPECT_FALSE(parse_size("lots").ok());
  EXPECT_FALSE(parse_size("12Q").ok());
  EXPECT_FALSE(parse_size("-1M").ok());
  EXPECT_FALSE(parse_size("99999999999999999999G").ok());
  EXPECT_FALSE(parse_size("17179869184G").ok());
}

TEST(Parse, RunWithOptionsAndCommand) {
  auto c = parse({"run", "--kernel", "K", "--initrd", "I", "--mem", "1G", "--cpus", "2", "--append", "x=1", "--",
                  "sh", "-c", "exit 7"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kRun);
  EXPECT_EQ(c->run.kernel, "K");
  EXPECT_EQ(c->run.initrd, "I");
  EXPECT_EQ(c->run.mem_bytes, 1ull << 30);
  EXPECT_EQ(c->run.cpus, 2u);
  EXPECT_EQ(c->run.append, "x=1");
  EXPECT_TRUE(c->run.has_command);
  EXPECT_EQ(c->run.command, (std::vector<std::string>{"sh", "-c", "exit 7"}));
}

TEST(Parse, InitrdNoneDisablesTheDefault) {
  auto c = parse({"run", "--initrd", "none"});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->run.no_initrd);
}

TEST(Parse, BadInputGetsOneSentence) {
  EXPECT_EQ(parse({"run", "--cpus", "0"}).error().message, "--cpus must be at least 1");
  EXPECT_NE(parse({"run", "--cpus", "two"}).error().message.find("needs a number"), std::string::npos);
  EXPECT_NE(parse({"run", "--cpus", "100000"}).error().message.find("more vCPUs"), std::string::npos);
  EXPECT_NE(parse({"run", "--mem"}).error().message.find("needs a value"), std::string::npos);
  EXPECT_NE(parse({"run", "--bogus"}).error().message.find("unknown option"), std::string::npos);
  EXPECT_NE(parse({"run", "--"}).error().message.find("must be followed"), std::string::npos);
  EXPECT_NE(parse({"frobnicate"}).error().message.find("unknown command"), std::string::npos);
}

TEST(Parse, ExecTakesANameTheCommandsOptionsAndACommand) {
  auto c = parse({"exec", "dev", "-t", "--env", "A=1", "--env", "B=x=y", "--workdir", "/tmp", "--", "sh", "-c", "exit 3"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kExec);
  EXPECT_EQ(c->vm_name, "dev");
  EXPECT_TRUE(c->run.tty);
  EXPECT_EQ(c->run.env, (std::vector<std::string>{"A=1", "B=x=y"}));
  EXPECT_EQ(c->run.workdir, "/tmp");
  EXPECT_TRUE(c->run.has_command);
  EXPECT_EQ(c->run.command, (std::vector<std::string>{"sh", "-c", "exit 3"}));
  // Options after -- are the command's.
  auto d = parse({"exec", "dev", "--", "ls", "-t", "--env"});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_FALSE(d->run.tty);
  EXPECT_EQ(d->run.command, (std::vector<std::string>{"ls", "-t", "--env"}));
  for (auto help : {std::vector<std::string>{"exec", "--help"}, {"exec", "dev", "-h"}, {"help", "exec"}}) {
    auto h = parse(help);
    ASSERT_TRUE(h.ok()) << h.error().message;
    EXPECT_EQ(h->verb, Command::Verb::kHelp);
    EXPECT_EQ(h->help_topic, "exec");
  }
  EXPECT_NE(usage("exec").find("usage: moss exec NAME"), std::string::npos);
  EXPECT_NE(usage().find("moss exec NAME"), std::string::npos);
}

TEST(Parse, ExecRefusalsAreOneSentence) {
  EXPECT_EQ(parse({"exec"}).error().message, "moss exec needs the name of a running VM: moss exec NAME -- CMD ARGS...");
  EXPECT_EQ(parse({"exec", "-t", "--", "ls"}).error().message,
            "moss exec needs the name of a running VM: moss exec NAME -- CMD ARGS...");
  EXPECT_EQ(parse({"exec", "dev"}).error().message, "moss exec needs a command: moss exec dev -- CMD ARGS...");
  EXPECT_EQ(parse({"exec", "dev", "--"}).error().message, "'--' must be followed by the command to run in the guest");
  EXPECT_EQ(parse({"exec", "dev", "--mem", "1G", "--", "ls"}).error().message,
            "unknown option '--mem' for moss exec (see moss exec --help)");
  EXPECT_EQ(parse({"exec", "dev", "--env", "NOVALUE", "--", "ls"}).error().message, "--env needs KEY=VALUE, not 'NOVALUE'");
  EXPECT_EQ(parse({"exec", "dev", "--workdir", "rel", "--", "ls"}).error().message,
            "--workdir needs an absolute path in the guest");
  EXPECT_EQ(parse({"exec", "dev", "--env"}).error().message, "--env needs a value");
  EXPECT_NE(parse({"exec", "../x", "--", "ls"}).error().message.find("is not a valid VM name"), std::string::npos);
}

TEST(Parse, DisksKeepTheirOrderAndReadOnlyFlag) {
  auto c = parse({"run", "--disk", "a.img", "--vhost-user-blk", "/run/qsd.sock", "--disk", "/dev/sdb,ro"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->run.disks.size(), 3u);
  EXPECT_EQ(c->run.disks[0].path, "a.img");
  EXPECT_FALSE(c->run.disks[0].readonly);
  EXPECT_FALSE(c->run.disks[0].vhost_user);
  EXPECT_EQ(c->run.disks[1].path, "/run/qsd.sock");
  EXPECT_TRUE(c->run.disks[1].vhost_user);
  EXPECT_EQ(c->run.disks[2].path, "/dev/sdb");
  EXPECT_TRUE(c->run.disks[2].readonly);
}

TEST(Parse, DevicesOfAnyKnownKindKeepTheirOrderAndOptions) {
  auto c = parse({"run", "--device", "null,capacity=1048576", "--disk", "a.img", "--device", "null"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->run.devices.size(), 2u);
  EXPECT_EQ(c->run.devices[0].kind, "null");
  EXPECT_EQ(c->run.devices[0].options, "capacity=1048576");
  EXPECT_EQ(c->run.devices[1].kind, "null");
  EXPECT_EQ(c->run.devices[1].options, "");
  EXPECT_EQ(c->run.disks.size(), 1u);
  EXPECT_EQ(parse({"run", "--device", "frob,x=1"}).error().message, "--device frob: no such kind of device");
  EXPECT_EQ(parse({"run", "--device", ",x"}).error().message, "--device needs KIND[,OPTIONS]");
}

TEST(Parse, BadDisksAreRefused) {
  EXPECT_FALSE(parse({"run", "--disk"}).ok());
  EXPECT_FALSE(parse({"run", "--disk", ",ro"}).ok());
  EXPECT_FALSE(parse({"run", "--disk", ""}).ok());
  EXPECT_FALSE(parse({"run", "--vhost-user-blk", ""}).ok());
  EXPECT_FALSE(parse({"run", "--vhost-user-blk", ",peer-uid=0"}).ok());
  for (const char* bad : {"/s,peer-uid=", "/s,peer-uid=x", "/s,peer-uid=-1", "/s,peer-uid=1x", "/s,peer-uid=4294967295"}) {
    auto r = parse({"run", "--vhost-user-blk", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("peer-uid needs a numeric user id"), std::string::npos) << r.error().message;
  }
}

TEST(Parse, VhostUserBlkTakesThePeerUidTheUserTrusts) {
  auto c = parse({"run", "--vhost-user-blk", "/run/qsd.sock", "--vhost-user-blk", "/run/a,b.sock,peer-uid=107"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->run.disks.size(), 2u);
  EXPECT_EQ(c->run.disks[0].path, "/run/qsd.sock");
  EXPECT_FALSE(c->run.disks[0].peer_uid.has_value());
  EXPECT_EQ(c->run.disks[1].path, "/run/a,b.sock");
  EXPECT_TRUE(c->run.disks[1].vhost_user);
  EXPECT_EQ(c->run.disks[1].peer_uid, 107u);
}

TEST(Parse, NamedVmsAndTheirVerbs) {
  auto r = parse({"run", "--name", "web-1", "--", "true"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->run.name, "web-1");
  EXPECT_EQ(parse({"ls"})->verb, Command::Verb::kList);
  auto st = parse({"stats", "web-1"});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->verb, Command::Verb::kStats);
  EXPECT_EQ(st->vm_name, "web-1");
  EXPECT_EQ(parse({"stop", "web-1"})->verb, Command::Verb::kStop);
  EXPECT_FALSE(parse({"stop"}).ok());
  EXPECT_FALSE(parse({"stats", "a", "b"}).ok());
  EXPECT_FALSE(parse({"ls", "x"}).ok());
  EXPECT_FALSE(parse({"run", "--name", ""}).ok());
}

TEST(Parse, SandboxIsOnUnlessNoSandboxIsGiven) {
  auto c = parse({"run", "--", "true"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->run.no_sandbox);
  c = parse({"run", "--no-sandbox", "--", "true"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->run.no_sandbox);
  // After "--" it belongs to the guest's command.
  c = parse({"run", "--", "echo", "--no-sandbox"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->run.no_sandbox);
  EXPECT_EQ(c->run.command, (std::vector<std::string>{"echo", "--no-sandbox"}));
  EXPECT_NE(usage().find("--no-sandbox"), std::string::npos);
}

TEST(Parse, DeviceHandsTheRestToTheWorker) {
  auto c = parse({"device", "blk", "--socket-path", "s", "--disk", "d"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kDevice);
  EXPECT_EQ(c->device, "blk");
  EXPECT_EQ(c->device_args, (std::vector<std::string>{"--socket-path", "s", "--disk", "d"}));
  EXPECT_FALSE(parse({"device"}).ok());
  EXPECT_FALSE(parse({"device", "gpu"}).ok());
  c = parse({"device", "vsock", "--help"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->device, "vsock");
}

TEST(Parse, EveryVerbsHelpIsThatVerbsUsage) {
  for (const char* verb : {"run", "ls", "stats", "stop", "pause", "resume", "device"}) {
    for (const char* flag : {"--help", "-h"}) {
      auto c = parse({verb, flag});
      ASSERT_TRUE(c.ok()) << verb << " " << flag << ": " << c.error().message;
      EXPECT_EQ(c->verb, Command::Verb::kHelp) << verb;
      EXPECT_EQ(c->help_topic, verb);
      EXPECT_EQ(usage(verb).rfind(std::string("usage: moss ") + verb, 0), 0u) << usage(verb);
    }
    auto h = parse({"help", verb});
    ASSERT_TRUE(h.ok()) << h.error().message;
    EXPECT_EQ(h->help_topic, verb);
  }
  // Wherever it comes among run's options, and with a name given too.
  auto r = parse({"run", "--mem", "1G", "--help", "--", "true"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->help_topic, "run");
  EXPECT_EQ(parse({"stats", "web", "--help"})->help_topic, "stats");
  EXPECT_EQ(parse({"list", "-h"})->help_topic, "ls");
  // After "--" it is the guest command's, and a value's ("--append --help") is the value.
  auto cmd = parse({"run", "--", "ls", "--help"});
  ASSERT_TRUE(cmd.ok());
  EXPECT_EQ(cmd->verb, Command::Verb::kRun);
  auto app = parse({"run", "--append", "--help"});
  ASSERT_TRUE(app.ok());
  EXPECT_EQ(app->verb, Command::Verb::kRun);
  EXPECT_EQ(app->run.append, "--help");
  // A worker's --help is the worker's.
  EXPECT_EQ(parse({"device", "blk", "--help"})->verb, Command::Verb::kDevice);
  EXPECT_EQ(parse({"help", "tape"}).error().message,
            "moss help knows no verb 'tape' (this version has: run, exec, ls, stats, stop, pause, resume, device, suspend, "
            "restore, spore, inspect, pack, unpack, store)");
  EXPECT_EQ(usage(""), usage());
}

TEST(Parse, CommandOptionsGoToTheAgent) {
  auto c = parse({"run", "-t", "--env", "A=1", "--env", "B=", "--workdir", "/tmp", "--vsock-socket", "/run/v.sock",
                  "--console", "c.log", "--", "sh", "-t"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->run.tty);
  EXPECT_EQ(c->run.env, (std::vector<std::string>{"A=1", "B="}));
  EXPECT_EQ(c->run.workdir, "/tmp");
  EXPECT_EQ(c->run.vsock_socket, "/run/v.sock");
  EXPECT_EQ(c->run.console_file, "c.log");
  EXPECT_EQ(c->run.command, (std::vector<std::string>{"sh", "-t"}));
  EXPECT_EQ(c->run.boot_timeout_s, 300u);  // The default.
  c = parse({"run", "--boot-timeout", "0", "--", "true"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->run.boot_timeout_s, 0u);
  c = parse({"run", "--boot-timeout", "86400", "--", "true"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->run.boot_timeout_s, 86400u);
  // Each refusal is one sentence naming the option.
  auto refused = [](std::vector<std::string> args, const char* what) {
    auto r = parse(args);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.error().message.find(what), std::string::npos) << r.error().message;
  };
  refused({"run", "--env", "NOEQUALS", "--", "true"}, "--env needs KEY=VALUE");
  refused({"run", "--env", "=1", "--", "true"}, "--env needs KEY=VALUE");
  refused({"run", "--workdir", "relative", "--", "true"}, "--workdir needs an absolute path");
  refused({"run", "-t"}, "add -- CMD");
  refused({"run", "--env", "A=1"}, "add -- CMD");
  refused({"run", "--vsock-socket", ""}, "--vsock-socket needs a path");
  for (const char* bad : {"", "-1", "+5", "1.5", "10s", "86401", "99999999999999999999"}) {
    refused({"run", "--boot-timeout", bad, "--", "true"}, "--boot-timeout needs whole seconds");
  }
  refused({"run", "--boot-timeout", "5"}, "add -- CMD");
}

}  // namespace
}  // namespace moss::cli

namespace moss::cli {
namespace {

TEST(ParseSpores, SuspendTakesANameAndTheSporeToWrite) {
  auto c = parse({"suspend", "dev", "--out", "dev.spore"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kSuspend);
  EXPECT_EQ(c->vm_name, "dev");
  EXPECT_EQ(c->spore_output, "dev.spore");
  EXPECT_FALSE(c->keep_running);
  EXPECT_TRUE(c->store_dir.empty());
  c = parse({"suspend", "--keep-running", "dev", "-o", "s", "--store", "/st"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->keep_running);
  EXPECT_EQ(c->store_dir, "/st");
  EXPECT_EQ(c->spore_output, "s");
  EXPECT_EQ(parse({"suspend", "dev"}).error().message, "moss suspend needs --out SPORE, the spore to write");
  EXPECT_EQ(parse({"suspend", "--out", "s"}).error().message, "moss suspend needs exactly one VM name");
  EXPECT_EQ(parse({"suspend", "a", "b", "--out", "s"}).error().message, "moss suspend needs exactly one VM name");
  EXPECT_NE(parse({"suspend", "dev", "--out"}).error().message.find("needs a value"), std::string::npos);
  EXPECT_NE(parse({"suspend", "dev", "--out", "s", "--now"}).error().message.find("unknown option '--now'"), std::string::npos);
  EXPECT_NE(parse({"suspend", "a/b", "--out", "s"}).error().message.find("not a valid VM name"), std::string::npos);
}

TEST(ParseSpores, RestoreIsARunFromTheSporeWithItsOwnMachine) {
  auto c = parse({"restore", "dev.spore", "--name", "dev", "--disk", "data.img", "--disk", "b.img,ro", "--clock", "realtime",
                  "--store", "/st", "--console", "c.log", "--stats", "s.json", "--vsock-socket", "/v", "--no-sandbox"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kRestore);
  EXPECT_EQ(c->run.from, "dev.spore");
  EXPECT_EQ(c->run.name, "dev");
  ASSERT_EQ(c->run.disks.size(), 2u);
  EXPECT_EQ(c->run.disks[0].path, "data.img");
  EXPECT_TRUE(c->run.disks[1].readonly);
  EXPECT_TRUE(c->run.realtime_clock);
  EXPECT_EQ(c->run.store_dir, "/st");
  EXPECT_EQ(c->run.console_file, "c.log");
  EXPECT_EQ(c->run.stats_file, "s.json");
  EXPECT_EQ(c->run.vsock_socket, "/v");
  EXPECT_TRUE(c->run.no_sandbox);
  EXPECT_FALSE(parse({"restore", "s", "--name", "d"})->run.realtime_clock);
  EXPECT_EQ(parse({"restore", "s"}).error().message, "moss restore needs --name NAME, the name of the VM it continues");
  EXPECT_NE(parse({"restore", "--name", "d"}).error().message.find("needs the spore first"), std::string::npos);
  EXPECT_NE(parse({"restore"}).error().message.find("needs the spore first"), std::string::npos);
  for (const char* opt : {"--kernel", "--initrd", "--append", "--mem", "--cpus", "--vhost-user-blk"}) {
    auto r = parse({"restore", "s", "--name", "d", opt, "1"});
    ASSERT_FALSE(r.ok()) << opt;
    EXPECT_EQ(r.error().message, std::string(opt) +
                                     " does not apply to a spore: its machine (kernel, memory, vCPUs, devices) is the one "
                                     "it captured");
  }
  EXPECT_NE(parse({"restore", "s", "--name", "d", "--clock", "utc"}).error().message.find("only 'realtime'"), std::string::npos);
  EXPECT_NE(parse({"restore", "s", "--name", "d", "--", "true"}).error().message.find("takes no command"), std::string::npos);
  EXPECT_NE(parse({"restore", "s", "--name", "d", "--from", "x"}).error().message.find("--from is an option of moss run"),
            std::string::npos);
}

TEST(ParseSpores, RunFromASporeTakesACommandButNoMachine) {
  auto c = parse({"run", "--from", "base.spore", "--store", "/st", "--", "python3", "-V"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kRun);
  EXPECT_EQ(c->run.from, "base.spore");
  EXPECT_EQ(c->run.store_dir, "/st");
  EXPECT_EQ(c->run.command, (std::vector<std::string>{"python3", "-V"}));
  EXPECT_NE(parse({"run", "--from", "s", "--mem", "1G"}).error().message.find("--mem does not apply to a spore"),
            std::string::npos);
  EXPECT_EQ(parse({"run", "--store", "/st"}).error().message, "--store applies to a spore (moss run --from SPORE)");
  EXPECT_EQ(parse({"run", "--clock", "realtime"}).error().message,
            "--clock applies to a spore (moss restore, moss run --from)");
  EXPECT_EQ(parse({"run", "--from", ""}).error().message, "--from needs a spore");
}

TEST(ParseSpores, SporeCreateBootsWithRunsOptions) {
  auto c = parse({"spore", "create", "base.spore", "--kernel", "K", "--mem", "1G", "--cpus", "2", "--disk", "d.img",
                  "--store", "/st"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, Command::Verb::kSporeCreate);
  EXPECT_EQ(c->run.create_spore, "base.spore");
  EXPECT_TRUE(c->run.from.empty());
  EXPECT_EQ(c->run.kernel, "K");
  EXPECT_EQ(c->run.mem_bytes, 1ull << 30);
  EXPECT_EQ(c->run.cpus, 2u);
  EXPECT_EQ(c->run.store_dir, "/st");
  EXPECT_NE(parse({"spore", "create", "s", "--", "true"}).error().message.find("takes no command"), std::string::npos);
  EXPECT_NE(parse({"spore", "create", "s", "--name", "x"}).error().message.find("takes no --name"), std::string::npos);
  EXPECT_EQ(parse({"spore"}).error().message, "moss spore needs a subcommand: moss spore create SPORE");
  EXPECT_EQ(parse({"spore", "grow", "s"}).error().message, "moss spore needs a subcommand: moss spore create SPORE");
  EXPECT_NE(parse({"spore", "create"}).error().message.find("needs the spore first"), std::string::npos);
}

TEST(ParseSpores, EachSporeVerbHasItsHelp) {
  for (auto args : std::vector<std::vector<std::string>>{{"suspend", "--help"},
                                                         {"suspend", "dev", "-h"},
                                                         {"restore", "--help"},
                                                         {"restore", "s", "--name", "d", "--help"},
                                                         {"spore", "--help"},
                                                         {"spore", "create", "-h"},
                                                         {"spore", "create", "s", "--help"},
                                                         {"help", "suspend"},
                                                         {"help", "restore"},
                                                         {"help", "spore"}}) {
    auto c = parse(args);
    ASSERT_TRUE(c.ok()) << args[0] << ": " << c.error().message;
    EXPECT_EQ(c->verb, Command::Verb::kHelp) << args[0];
    std::string text = usage(c->help_topic);
    std::string verb = args[0] == "help" ? args[1] : args[0];
    EXPECT_EQ(text.rfind("usage: moss " + verb, 0), 0u) << text;
  }
  EXPECT_NE(usage("restore").find("~/.local/share/moss/store"), std::string::npos);
  EXPECT_NE(usage().find("moss suspend NAME --out SPORE"), std::string::npos);
  EXPECT_NE(usage("run").find("moss run --from SPORE"), std::string::npos);
}

}  // namespace
}  // namespace moss::cli
