#include "policies/policy.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

namespace moss::policy {
namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) b++;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) e--;
  return std::string(s.substr(b, e - b));
}

bool is_ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_ident(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// A policy name in an include line, or a file's own name: lower-case words and dashes.
bool valid_policy_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' ||
          c == '_')) {
      return false;
    }
  }
  return true;
}

bool valid_syscall_name(const std::string& s) {
  if (s.empty() || !(std::islower(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_')) {
      return false;
    }
  }
  return true;
}

struct Token {
  enum class Kind { kIdent, kNumber, kOp, kEnd };
  Kind kind = Kind::kEnd;
  std::string text;
  uint64_t number = 0;
};

// The condition after "syscall:", one line. Recursive descent over the grammar in policy.h.
class ConditionParser {
 public:
  explicit ConditionParser(std::string_view text) : text_(text) {}

  Result<std::vector<Alternative>> parse() {
    MOSS_TRY_VOID(advance());
    std::vector<Alternative> any;
    for (;;) {
      MOSS_TRY(Alternative alt, alternative());
      any.push_back(std::move(alt));
      if (is_op("||")) {
        MOSS_TRY_VOID(advance());
        continue;
      }
      if (tok_.kind != Token::Kind::kEnd) return make_error("expected '||', '&&' or the end of the line, not '" + tok_.text + "'");
      return any;
    }
  }

 private:
  bool is_op(const char* op) const { return tok_.kind == Token::Kind::kOp && tok_.text == op; }

  Result<void> advance() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) pos_++;
    tok_ = Token{};
    if (pos_ >= text_.size()) return {};
    char c = text_[pos_];
    if (is_ident_start(c)) {
      size_t b = pos_;
      while (pos_ < text_.size() && is_ident(text_[pos_])) pos_++;
      tok_.kind = Token::Kind::kIdent;
      tok_.text = std::string(text_.substr(b, pos_ - b));
      return {};
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t b = pos_;
      while (pos_ < text_.size() && is_ident(text_[pos_])) pos_++;
      tok_.kind = Token::Kind::kNumber;
      tok_.text = std::string(text_.substr(b, pos_ - b));
      errno = 0;
      char* end = nullptr;
      unsigned long long v = std::strtoull(tok_.text.c_str(), &end, 0);
      if (errno == ERANGE || end == nullptr || *end != '\0') {
        return make_error("'" + tok_.text + "' is not a number (write decimal, or hex as 0x...)");
      }
      tok_.number = v;
      return {};
    }
    for (const char* op : {"||", "&&", "==", "!=", "<=", ">=", "<", ">", "&", "|", "(", ")"}) {
      size_t n = std::strlen(op);
      if (text_.compare(pos_, n, op) == 0) {
        tok_.kind = Token::Kind::kOp;
        tok_.text = op;
        pos_ += n;
        return {};
      }
    }
    if (c == '=') return make_error("'=' is not a comparison; write '=='");
    return make_error(std::string("unexpected character '") + c + "'");
  }

  Result<Alternative> alternative() {
    Alternative alt;
    std::set<unsigned> args;
    for (;;) {
      MOSS_TRY(Compare cmp, comparison());
      if (!args.insert(cmp.arg).second) {
        return make_error("arg" + std::to_string(cmp.arg) +
                          " appears twice in one '&&' group, which libseccomp cannot express; use '||' or one "
                          "masked comparison");
      }
      alt.all.push_back(cmp);
      if (!is_op("&&")) return alt;
      MOSS_TRY_VOID(advance());
    }
  }

  Result<Compare> comparison() {
    if (tok_.kind != Token::Kind::kIdent || tok_.text.size() != 4 || tok_.text.compare(0, 3, "arg") != 0 ||
        tok_.text[3] < '0' || tok_.text[3] > '5') {
      return make_error("expected an argument (arg0 to arg5), not '" + tok_.text + "'");
    }
    Compare c;
    c.arg = static_cast<unsigned>(tok_.text[3] - '0');
    MOSS_TRY_VOID(advance());
    if (is_op("&")) {
      MOSS_TRY_VOID(advance());
      MOSS_TRY(c.mask, value());
      if (!is_op("==")) return make_error("a masked comparison is 'argN & MASK == VALUE'; expected '=='");
      MOSS_TRY_VOID(advance());
      MOSS_TRY(c.value, value());
      c.op = Compare::Op::kMaskedEq;
      if ((c.value & ~c.mask) != 0) return make_error("the value has bits outside the mask, so it can never match");
      return c;
    }
    static const std::map<std::string, Compare::Op> kOps = {
        {"==", Compare::Op::kEq}, {"!=", Compare::Op::kNe}, {"<", Compare::Op::kLt},
        {"<=", Compare::Op::kLe}, {">", Compare::Op::kGt},  {">=", Compare::Op::kGe}};
    auto it = tok_.kind == Token::Kind::kOp ? kOps.find(tok_.text) : kOps.end();
    if (it == kOps.end()) return make_error("expected a comparison (==, !=, <, <=, >, >= or '& MASK =='), not '" + tok_.text + "'");
    c.op = it->second;
    MOSS_TRY_VOID(advance());
    MOSS_TRY(c.value, value());
    return c;
  }

  // TERM ('|' TERM)*: constants combined with bitwise or.
  Result<uint64_t> value() {
    MOSS_TRY(uint64_t v, term());
    while (is_op("|")) {
      MOSS_TRY_VOID(advance());
      MOSS_TRY(uint64_t t, term());
      v |= t;
    }
    return v;
  }

  Result<uint64_t> term() {
    if (is_op("(")) {
      MOSS_TRY_VOID(advance());
      MOSS_TRY(uint64_t v, value());
      if (!is_op(")")) return make_error("expected ')'");
      MOSS_TRY_VOID(advance());
      return v;
    }
    if (tok_.kind == Token::Kind::kNumber) {
      uint64_t v = tok_.number;
      MOSS_TRY_VOID(advance());
      return v;
    }
    if (tok_.kind == Token::Kind::kIdent) {
      auto v = constant(tok_.text);
      if (!v) return make_error("'" + tok_.text + "' is not a constant moss knows (policies/constants.cc lists them)");
      MOSS_TRY_VOID(advance());
      return *v;
    }
    return make_error(tok_.kind == Token::Kind::kEnd ? std::string("a value is missing at the end of the line")
                                                     : "expected a number or a constant, not '" + tok_.text + "'");
  }

  std::string_view text_;
  size_t pos_ = 0;
  Token tok_;
};

Result<Rule> parse_rule(std::string_view line) {
  Rule r;
  size_t colon = line.find(':');
  r.syscall = trim(line.substr(0, colon));
  if (!valid_syscall_name(r.syscall)) {
    return make_error("'" + r.syscall + "' is not a system call name (lower case, digits and '_')");
  }
  if (colon == std::string_view::npos) return r;
  std::string body = trim(line.substr(colon + 1));
  if (body.empty()) return make_error("nothing after '" + r.syscall + ":' (drop the ':' to allow any arguments)");
  if (body.compare(0, 7, "return ") == 0 || body == "return") {
    std::string name = trim(std::string_view(body).substr(6));
    auto e = errno_value(name);
    if (!e) return make_error("'return' needs an errno name moss knows (ENOSYS, EPERM, EACCES, ...), not '" + name + "'");
    r.errno_value = *e;
    return r;
  }
  ConditionParser p(body);
  MOSS_TRY(r.any, p.parse());
  return r;
}

class Flattener {
 public:
  explicit Flattener(const Source& source) : source_(source) {}

  Result<void> file(const std::string& name, const std::string& included_from) {
    if (std::find(stack_.begin(), stack_.end(), name) != stack_.end()) {
      std::string cycle;
      for (const auto& s : stack_) cycle += s + " -> ";
      return make_error(included_from + ": the includes go round in a circle (" + cycle + name + ")");
    }
    if (!done_.insert(name).second) return {};  // Each file once.
    auto text = source_(name);
    if (!text) {
      return make_error((included_from.empty() ? std::string() : included_from + ": ") + "there is no policy called '" +
                        name + "'");
    }
    stack_.push_back(name);
    size_t line_no = 0, start = 0;
    const std::string& t = *text;
    while (start <= t.size()) {
      size_t nl = t.find('\n', start);
      if (nl == std::string::npos) nl = t.size();
      std::string_view raw(t.data() + start, nl - start);
      start = nl + 1;
      line_no++;
      std::string where = name + ".policy:" + std::to_string(line_no);
      std::string comment;
      size_t hash = raw.find('#');
      if (hash != std::string_view::npos) {
        comment = trim(raw.substr(hash + 1));
        raw = raw.substr(0, hash);
      }
      std::string line = trim(raw);
      if (line.empty()) continue;
      if (line.compare(0, 8, "include ") == 0 || line == "include") {
        std::string inc = trim(std::string_view(line).substr(7));
        if (!valid_policy_name(inc)) return make_error(where + ": '" + inc + "' is not a policy name (e.g. include common)");
        MOSS_TRY_VOID(file(inc, where));
        continue;
      }
      auto rule = parse_rule(line);
      if (!rule) return make_error(where + ": " + rule.error().message);
      rule->where = where;
      rule->text = line;
      rule->comment = comment;
      MOSS_TRY_VOID(check_conflict(*rule));
      rules_.push_back(std::move(*rule));
    }
    stack_.pop_back();
    return {};
  }

  std::vector<Rule> take() { return std::move(rules_); }

 private:
  Result<void> check_conflict(const Rule& r) {
    for (const auto& o : rules_) {
      if (o.syscall != r.syscall || o.errno_value == r.errno_value) continue;
      return make_error(r.where + ": " + r.syscall + " is " +
                        (r.errno_value ? "made to fail here but allowed" : "allowed here but made to fail") + " at " +
                        o.where + "; a system call gets one action");
    }
    return {};
  }

  const Source& source_;
  std::vector<std::string> stack_;
  std::set<std::string> done_;
  std::vector<Rule> rules_;
};

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return v == 0 ? "0" : buf;
}

}  // namespace

Result<Policy> parse(const std::string& name, const Source& source) {
  if (!valid_policy_name(name)) return make_error("'" + name + "' is not a policy name");
  Flattener f(source);
  MOSS_TRY_VOID(f.file(name, ""));
  return Policy{name, f.take()};
}

std::string format_rule(const Rule& rule) {
  std::string s = rule.syscall;
  if (rule.errno_value) {
    const char* n = strerrorname_np(rule.errno_value);
    return s + ": return " + (n ? n : std::to_string(rule.errno_value));
  }
  if (rule.any.empty()) return s;
  s += ":";
  static const char* const kOps[] = {"==", "!=", "<", "<=", ">", ">="};
  for (size_t i = 0; i < rule.any.size(); i++) {
    if (i) s += " ||";
    for (size_t j = 0; j < rule.any[i].all.size(); j++) {
      const Compare& c = rule.any[i].all[j];
      s += j ? " && " : " ";
      s += "arg" + std::to_string(c.arg) + " ";
      if (c.op == Compare::Op::kMaskedEq) {
        s += "& " + hex(c.mask) + " == " + hex(c.value);
      } else {
        s += std::string(kOps[static_cast<int>(c.op)]) + " " + hex(c.value);
      }
    }
  }
  return s;
}

}  // namespace moss::policy
