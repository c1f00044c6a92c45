// moss-policy: prints the effective seccomp policy of a role (every include expanded, every
// constant resolved), or the BPF program libseccomp compiles from it. See README.md.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "policies/builtin.h"
#include "policies/seccomp_filter.h"

namespace {

using moss::policy::Policy;

const char kUsage[] =
    "usage: moss-policy ROLE           print ROLE's effective seccomp policy\n"
    "       moss-policy --bpf ROLE     print the filter libseccomp compiles from it (PFC)\n"
    "       moss-policy --file PATH    check a policy file (includes found beside it) and print it\n"
    "       moss-policy --list         list the roles and the built-in policy files\n"
    "\n"
    "ROLE is one of: vcpu, blk, vsock. The policies are compiled into moss's binaries from policies/*.policy;\n"
    "a call a role's policy does not allow kills that process (SIGSYS).\n";

void print(const Policy& p, const std::string& origin) {
  std::printf("# moss-policy %s: the seccomp policy %s, every include expanded.\n", p.name.c_str(), origin.c_str());
  std::printf("# Default action: kill the process (SIGSYS). %zu rules.\n", p.rules.size());
  for (const auto& r : p.rules) {
    std::string line = moss::policy::format_rule(r);
    std::string note = r.where;
    auto named = moss::policy::constants_in(r.text);
    if (!named.empty()) {
      note += ":";
      for (const auto& [name, value] : named) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %s=%#llx", name.c_str(), static_cast<unsigned long long>(value));
        if (note.find(buf) == std::string::npos) note += buf;
      }
    }
    if (!r.comment.empty()) note += " (" + r.comment + ")";
    std::printf("%-40s # %s\n", line.c_str(), note.c_str());
  }
}

// "blk, null, vcpu, vsock".
std::string role_list() {
  std::string out;
  for (auto r : moss::sandbox::all_roles()) out += (out.empty() ? "" : ", ") + std::string(moss::sandbox::role_name(r));
  return out;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "moss-policy: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string a1 = argc > 1 ? argv[1] : "", a2 = argc > 2 ? argv[2] : "";
  if (argc < 2 || a1 == "--help" || a1 == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (a1 == "--list") {
    for (auto r : moss::sandbox::all_roles()) std::printf("role %s\n", moss::sandbox::role_name(r));
    for (const auto& n : moss::policy::builtin_names()) std::printf("file %s.policy\n", n.c_str());
    return 0;
  }
  if (a1 == "--file") {
    if (argc != 3) return fail("--file needs one policy file");
    std::string path = a2, dir = ".", base = a2;
    if (auto slash = path.rfind('/'); slash != std::string::npos) {
      dir = path.substr(0, slash);
      base = path.substr(slash + 1);
    }
    const std::string ext = ".policy";
    if (base.size() <= ext.size() || base.compare(base.size() - ext.size(), ext.size(), ext) != 0) {
      return fail(path + " is not a .policy file");
    }
    auto source = [&](const std::string& name) -> std::optional<std::string> {
      std::ifstream in(dir + "/" + name + ".policy");
      if (!in) return std::nullopt;
      std::stringstream ss;
      ss << in.rdbuf();
      return ss.str();
    };
    auto p = moss::policy::parse(base.substr(0, base.size() - ext.size()), source);
    if (!p) return fail(p.error().message);
    auto f = moss::policy::Filter::compile(*p);
    if (!f) return fail(f.error().message);
    print(*p, "in " + path);
    return 0;
  }
  bool bpf = a1 == "--bpf";
  std::string role_name = bpf ? a2 : a1;
  if (argc != (bpf ? 3 : 2)) return fail(std::string("unexpected arguments (see moss-policy --help)"));
  auto role = moss::sandbox::role_from_name(role_name);
  if (!role) return fail("'" + role_name + "' is not a role (the roles are: " + role_list() + ")");
  auto p = moss::policy::builtin(*role);
  if (!p) return fail(p.error().message);
  auto f = moss::policy::Filter::compile(*p);
  if (!f) return fail(f.error().message);
  if (bpf) {
    auto text = f->pfc();
    if (!text) return fail(text.error().message);
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  print(*p, "moss-" + role_name + " loads");
  return 0;
}
