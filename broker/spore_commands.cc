#include "broker/spore_commands.h"

#include <cstdio>

#include "broker/run.h"
#include "store/commands.h"

namespace moss {
namespace cli {
namespace {

constexpr const char* kStoreText =
    "Spores keep their memory in a chunk store that they share: $XDG_DATA_HOME/moss/store, else\n"
    "~/.local/share/moss/store, or --store DIR (created 0700; spores and chunks are 0600: they hold\n"
    "guest RAM).\n"
    "Exit status: 0; 2 for bad usage; 125 when it fails (one sentence on stderr).\n";

}  // namespace

bool is_spore_verb(const std::string& verb) {
  return verb == "inspect" || verb == "pack" || verb == "unpack" || verb == "store";
}

std::string spore_usage(const std::string& topic) {
  if (topic == "inspect") {
    return "usage: moss inspect SPORE\n\nPrints the spore's manifest as JSON (Cap'n Proto's JSON encoding; bytes as hex):\n"
           "the host it needs, the machine, vCPU and device state, the memory map and its identity.\n";
  }
  if (topic == "pack") {
    return "usage: moss pack SPORE -o FILE [--store DIR]\n\nWrites one file holding the spore's manifest and every chunk "
           "it needs, to move it to\nanother store or host (moss unpack); progress on a terminal. FILE is replaced whole.\n" +
           std::string(kStoreText);
  }
  if (topic == "unpack") {
    return "usage: moss unpack FILE -o DIR [--store DIR]\n\nMakes the spore DIR (which must not exist) from a file of moss "
           "pack, its chunks going into\nthe store. A truncated or corrupt file is refused and leaves no spore.\n" +
           std::string(kStoreText);
  }
  if (topic == "store") {
    return "usage: moss store gc [--store DIR]\n\nDeletes the chunks no spore references: spores whose directory is gone "
           "or whose manifest\nchanged are forgotten. It waits for spores being written, and never deletes their chunks.\n" +
           std::string(kStoreText);
  }
  return "";
}

Result<Command> parse_spore_command(const std::vector<std::string>& args) {
  Command c;
  const std::string verb = args[0];
  std::vector<std::string> positional;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      c.help_topic = verb;
      return c;
    }
    if (a == "-o" || a == "--output" || a == "--store") {
      if (i + 1 >= args.size() || args[i + 1].empty()) return make_error("moss " + verb + ": " + a + " needs a value");
      if (a == "--store" && verb == "inspect") return make_error("moss inspect takes no --store (it reads only the manifest)");
      if (a != "--store" && (verb == "store" || verb == "inspect")) return make_error("moss " + verb + " takes no " + a);
      (a == "--store" ? c.store_dir : c.spore_output) = args[++i];
      continue;
    }
    if (!a.empty() && a[0] == '-') return make_error("moss " + verb + ": unknown option " + a);
    positional.push_back(a);
  }
  if (verb == "store") {
    if (positional.size() != 1 || positional[0] != "gc") return make_error("moss store needs a subcommand: moss store gc");
    c.verb = Command::Verb::kStoreGc;
    return c;
  }
  if (verb == "inspect") {
    if (positional.size() != 1) return make_error("moss inspect needs exactly one spore");
    c.verb = Command::Verb::kInspect;
    c.spore_input = positional[0];
    return c;
  }
  const char* what = verb == "pack" ? "spore" : "pack file";
  if (positional.size() != 1) return make_error("moss " + verb + " needs exactly one " + what);
  if (c.spore_output.empty()) {
    return make_error(verb == "pack" ? "moss pack needs -o FILE, the pack to write" : "moss unpack needs -o DIR, the spore to make");
  }
  c.verb = verb == "pack" ? Command::Verb::kPack : Command::Verb::kUnpack;
  c.spore_input = positional[0];
  return c;
}

}  // namespace cli

int spore_command(const cli::Command& c) {
  Result<void> r;
  switch (c.verb) {
    case cli::Command::Verb::kStoreGc:
      r = store::store_gc_command(c.store_dir);
      break;
    case cli::Command::Verb::kPack:
      r = store::pack_command(c.spore_input, c.spore_output, c.store_dir);
      break;
    case cli::Command::Verb::kUnpack:
      r = store::unpack_command(c.spore_input, c.spore_output, c.store_dir);
      break;
    case cli::Command::Verb::kInspect:
      r = store::inspect_command(c.spore_input);
      break;
    default:
      MOSS_ASSERT(false);
  }
  if (!r) {
    std::fflush(stdout);
    std::fprintf(stderr, "moss: %s\n", r.error().message.c_str());
    return kExitFailure;
  }
  return 0;
}

}  // namespace moss
