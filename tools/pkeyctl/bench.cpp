// SPDX-License-Identifier: MIT
// pkeyctl bench: runs pkeys_bench and writes a report (Markdown): a table of
// every case's median with its ratio to the raw mprotect baseline that does
// the same work, and, where gnuplot is installed, plots (PNG) of the switch
// cost against region size and of the scaling with threads and virtual
// keys, naming the machine and backend. The table needs no gnuplot.
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "pkeys/pkeys.h"

namespace pkeyctl {
namespace {

const char* const kUsage = "usage: pkeyctl bench [--out DIR] [--bench PATH] [--quick]\n";

// How long pkeys_bench measures: each case `repetitions` times, each for at
// least `min_time` seconds; the report shows the median of the repetitions.
struct Plan {
  int repetitions;
  const char* min_time;
};
constexpr Plan kFull{5, "0.1"}, kQuick{3, "0.01"};

struct Result {
  std::string name;   // run_name: "BM_X/pages:1"
  double median_ns = 0;
  bool error = false;
  std::string message;  // why it was skipped
};

// The objects of the "benchmarks" array of Google Benchmark's JSON output
// (flat: no nested objects), split with strings honoured.
std::vector<std::string> json_objects(const std::string& json) {
  std::vector<std::string> out;
  std::size_t at = json.find("\"benchmarks\"");
  if (at == std::string::npos) return out;
  bool in_string = false, escaped = false;
  std::size_t open = std::string::npos;
  for (; at < json.size(); ++at) {
    const char c = json[at];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{') open = at;
    else if (c == '}' && open != std::string::npos) {
      out.push_back(json.substr(open, at - open + 1));
      open = std::string::npos;
    } else if (c == ']' && open == std::string::npos) {
      break;
    }
  }
  return out;
}

// The value of `"key": "..."` in `obj` (escapes kept as written), or "".
std::string string_field(const std::string& obj, const std::string& key) {
  const std::string tag = "\"" + key + "\": \"";
  const auto at = obj.find(tag);
  if (at == std::string::npos) return "";
  std::string out;
  for (std::size_t i = at + tag.size(); i < obj.size() && obj[i] != '"'; ++i) {
    if (obj[i] == '\\' && i + 1 < obj.size()) out += obj[i++];
    out += obj[i];
  }
  return out;
}

// The number after `"key": ` in `obj`, if present.
bool number_field(const std::string& obj, const std::string& key, double* out) {
  const std::string tag = "\"" + key + "\": ";
  const auto at = obj.find(tag);
  if (at == std::string::npos) return false;
  *out = std::strtod(obj.c_str() + at + tag.size(), nullptr);
  return true;
}

double to_ns(double t, const std::string& unit) {
  if (unit == "us") return t * 1e3;
  if (unit == "ms") return t * 1e6;
  if (unit == "s") return t * 1e9;
  return t;
}

// One result per case, in the order run: its median aggregate, or why it
// was skipped. `repetitions`: as the JSON reports them.
std::vector<Result> parse_results(const std::string& json, int* repetitions) {
  std::vector<Result> out;
  std::map<std::string, std::size_t> index;
  for (const std::string& obj : json_objects(json)) {
    const std::string name = string_field(obj, "run_name");
    if (name.empty()) continue;
    auto [it, inserted] = index.try_emplace(name, out.size());
    if (inserted) {
      Result fresh;
      fresh.name = name;
      out.push_back(fresh);
    }
    Result& r = out[it->second];
    double reps = 0;
    if (number_field(obj, "repetitions", &reps)) *repetitions = static_cast<int>(reps);
    if (obj.find("\"error_occurred\": true") != std::string::npos) {
      r.error = true;
      r.message = string_field(obj, "error_message");
      continue;
    }
    double t = 0;
    if (string_field(obj, "aggregate_name") == "median" && number_field(obj, "real_time", &t))
      r.median_ns = to_ns(t, string_field(obj, "time_unit"));
  }
  return out;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// The value of the benchmark argument `arg` in a name like "BM_X/arg:16".
long arg_of(const std::string& name, const std::string& arg) {
  const auto at = name.find("/" + arg + ":");
  return at == std::string::npos ? -1 : std::atol(name.c_str() + at + arg.size() + 2);
}

// The raw mprotect case doing the same work as `name` on populated pages of
// the same size: the same number of pages or ranges, the same random
// switches; one page where the case has no size.
std::string mprotect_baseline(const std::string& name) {
  if (const long d = arg_of(name, "domains"); d > 0) return "BM_RawMprotectRandomSwitch/domains:" + std::to_string(d);
  if (name == "BM_RawMprotectToggle64Ranges" || (arg_of(name, "pages") > 0 && arg_of(name, "ranges") > 1))
    return "BM_RawMprotectToggle64Ranges";
  if (const long p = arg_of(name, "pages"); p > 0) return "BM_RawMprotectToggle/pages:" + std::to_string(p);
  return "BM_RawMprotectToggle/pages:1";
}

std::string find_bench(const std::string& given) {
  if (!given.empty()) return given;
  char self[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  const std::string dir = n > 0 ? std::string(self, static_cast<std::size_t>(n)).substr(0, std::string(self).rfind('/')) : ".";
  for (const std::string& c : {dir + "/pkeys_bench", dir + "/../../bench/pkeys_bench"})
    if (::access(c.c_str(), X_OK) == 0) return c;
  return "pkeys_bench";  // from PATH
}

// Whether `program` is an executable file in one of PATH's directories.
bool in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (::access(((dir.empty() ? "." : dir) + "/" + program).c_str(), X_OK) == 0) return true;
  return false;
}

// Runs a program (from PATH) with its stdout, and with `quiet` its stderr,
// discarded; its exit status, or 128 + signal.
int run_program(std::vector<std::string> args, bool quiet) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "pkeyctl bench: fork: %s\n", std::strerror(errno));
    return 125;
  }
  if (pid == 0) {
    if (!std::freopen("/dev/null", "w", stdout)) ::_exit(125);
    if (quiet && !std::freopen("/dev/null", "w", stderr)) ::_exit(125);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "pkeyctl bench: cannot run %s: %s\n", args[0].c_str(), std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Writes `rows` (x y...) to `path`.
void write_data(const std::string& path, const std::vector<std::vector<double>>& rows) {
  std::ofstream out(path);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) out << (i ? " " : "") << row[i];
    out << "\n";
  }
}

// Writes the plot data and script into `dir` and runs gnuplot; "" when the
// three PNGs were made, else why not.
std::string plot(const std::string& dir, const std::vector<Result>& results) {
  std::map<std::string, double> median;
  for (const Result& r : results)
    if (!r.error) median[r.name] = r.median_ns;
  const auto get = [&](const std::string& name) { return median.count(name) ? median[name] : -1.0; };
  std::map<long, std::vector<double>> by_size;  // pages -> raw, emulated, pku
  std::vector<std::vector<double>> threads, domains;
  for (const Result& r : results) {
    if (r.error) continue;
    if (r.name.rfind("BM_RawMprotectToggle/", 0) == 0) {
      const long pages = arg_of(r.name, "pages");
      by_size[pages] = {get(r.name), get("BM_EmulatedSwitch/pages:" + std::to_string(pages) + "/ranges:1"),
                        get("BM_PkuSwitchBySize/pages:" + std::to_string(pages))};
    }
    if (r.name.rfind("BM_SyncThreadsRoundTrip/", 0) == 0)
      threads.push_back({static_cast<double>(arg_of(r.name, "threads")), r.median_ns / 1000});
    if (r.name.rfind("BM_VKeyRandomSwitch/", 0) == 0)
      domains.push_back({static_cast<double>(arg_of(r.name, "domains")), r.median_ns, get(mprotect_baseline(r.name))});
  }
  std::vector<std::vector<double>> sizes;
  for (auto& [pages, row] : by_size) sizes.push_back({pages * 4.0, row[0], row[1], row[2]});
  write_data(dir + "/switch_by_size.dat", sizes);
  write_data(dir + "/threads.dat", threads);
  write_data(dir + "/vkeys.dat", domains);

  const std::string script = dir + "/plots.gp";
  {
    std::ofstream gp(script);
    gp << "set terminal pngcairo size 800,500\nset logscale xy\nset grid\nset key top left\nset datafile missing '-1'\n"
       << "cd '" << std::filesystem::absolute(dir).string() << "'\n"
       << "set output 'switch_by_size.png'\nset title 'One rights switch (set, then set back) by region size'\n"
       << "set xlabel 'region size (KiB)'\nset ylabel 'ns (median)'\n"
       << "plot 'switch_by_size.dat' using 1:2 with linespoints title 'raw mprotect toggle', "
          "'' using 1:3 with linespoints title 'pkeys, emulated', '' using 1:4 with linespoints title 'pkeys, x86-pku'\n"
       << "set output 'threads.png'\nset title 'Cross-thread rights handshake (pkeys\\_sync\\_threads)'\n"
       << "set xlabel 'other threads'\nset ylabel 'us per call (median)'\n"
       << "plot 'threads.dat' using 1:2 with linespoints title 'round trip'\n"
       << "set output 'vkeys.png'\nset title 'Random domain switches (open, write a byte, close)'\n"
       << "set xlabel 'virtual keys (domains)'\nset ylabel 'ns per switch (median)'\n"
       << "plot 'vkeys.dat' using 1:2 with linespoints title 'pkeys virtual keys', "
          "'' using 1:3 with linespoints title 'mprotect alone'\n";
  }
  if (!in_path("gnuplot")) return "gnuplot is not installed (not found in PATH; Debian: gnuplot-nox)";
  if (const int r = run_program({"gnuplot", script}, /*quiet=*/true); r != 0)
    return "gnuplot failed (status " + std::to_string(r) + "; run 'gnuplot " + script + "' to see why)";
  return "";
}

std::string format(const char* fmt, double v) {
  char cell[64];
  std::snprintf(cell, sizeof cell, fmt, v);
  return cell;
}

void write_report(std::ofstream& md, const std::vector<Result>& results, int repetitions, const Plan& plan,
                  bool quick, const std::string& plots_missing) {
  utsname u{};
  ::uname(&u);
  md << "# pkeys benchmark report\n\n"
     << "- machine: " << cpu_model() << ", " << ::sysconf(_SC_NPROCESSORS_ONLN) << " CPUs, Linux " << u.release
     << "\n- backend: " << pkeys_backend() << " (" << pkeys_backend_reason() << ")\n"
     << "- run: `pkeys_bench" << (quick ? " --quick" : "") << "`, " << repetitions
     << " repetitions of each case, each at least " << plan.min_time
     << " s of iterations; every figure is the median of the repetitions (each repetition's figure is the mean "
        "real time per iteration)"
     << (quick ? ". --quick: fewer sizes and short runs, so figures are noisy" : "") << "\n"
     << "- vs raw mprotect: the case's median divided by the median, in the same run, of the raw mprotect case "
        "doing the same work on populated pages of the same size (column \"mprotect baseline\"; one page for "
        "cases without a size): a baseline reads 1.00x against itself\n"
     << "- vs WRPKRU pair: divided by the median of BM_RawWrpkruPair (PKU hardware only)\n";
  if (plots_missing.empty())
    md << "\n![switch cost by region size](switch_by_size.png)\n\n![handshake by threads](threads.png)\n\n"
       << "![random domain switches](vkeys.png)\n";
  else
    md << "- plots: skipped: " << plots_missing << "; their data is in *.dat beside this report\n";

  std::map<std::string, double> median;
  for (const Result& r : results)
    if (!r.error && r.median_ns > 0) median[r.name] = r.median_ns;
  const double wrpkru = median.count("BM_RawWrpkruPair") ? median["BM_RawWrpkruPair"] : 0;
  md << "\n| benchmark | median (ns) | vs raw mprotect | mprotect baseline | vs WRPKRU pair |\n"
     << "|---|---:|---:|---|---:|\n";
  for (const Result& r : results) {
    md << "| " << r.name << " | ";
    if (r.error) {
      md << "skipped: " << r.message << " | | | |\n";
      continue;
    }
    const std::string base = mprotect_baseline(r.name);
    md << format("%.1f", r.median_ns) << " | ";
    if (median.count(base)) md << format("%.2fx", r.median_ns / median[base]);
    md << " | " << base << " | ";
    if (wrpkru > 0) md << format("%.1fx", r.median_ns / wrpkru);
    md << " |\n";
  }
}

}  // namespace

int bench(int argc, char** argv) {
  std::string out_dir = "pkeys-bench-report", bench_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const bool takes_value = std::strcmp(argv[i], "--out") == 0 || std::strcmp(argv[i], "--bench") == 0;
    if (takes_value && (i + 1 >= argc || argv[i + 1][0] == '\0' || std::strncmp(argv[i + 1], "--", 2) == 0)) {
      std::fprintf(stderr, "pkeyctl bench: %s needs a value (%s)\n%s", argv[i],
                   argv[i][2] == 'o' ? "a directory" : "the path of pkeys_bench", kUsage);
      return 2;
    }
    if (std::strcmp(argv[i], "--out") == 0) {
      out_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--bench") == 0) {
      bench_path = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "%s\n"
          "Runs pkeys_bench and writes DIR/report.md (default DIR: pkeys-bench-report):\n"
          "a table of each case's median time beside the raw mprotect doing the same\n"
          "work (populated pages, same size) and, with gnuplot installed, plots of the\n"
          "switch cost against region size, the cross-thread handshake against thread\n"
          "count and random domain switches against the number of virtual keys. Without\n"
          "gnuplot the report and its table are written and the plots skipped. The\n"
          "report names the machine and the backend (PKEYS_BACKEND chooses it), the\n"
          "repetitions and the statistic. Each case is named on stderr as it starts.\n\n"
          "  --out DIR    where to write (created if needed)\n"
          "  --bench PATH the pkeys_bench to run (default: beside pkeyctl, or PATH)\n"
          "  --quick      fewer sizes, %d short repetitions: a few seconds, for smoke\n"
          "               tests (figures are noisy); the full run: %d repetitions of\n"
          "               at least %s s each, about a minute\n\n"
          "Exit status: 0 report written (with or without plots), 1 pkeys_bench or an\n"
          "installed gnuplot failed, or DIR cannot be written, 2 usage error or an\n"
          "unrecognised PKEYS_WX.\n",
          kUsage, kQuick.repetitions, kFull.repetitions, kFull.min_time);
      return 0;
    } else {
      std::fprintf(stderr, "pkeyctl bench: unexpected argument '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "pkeyctl bench: cannot create %s: %s\n", out_dir.c_str(), ec.message().c_str());
    return 1;
  }
  const Plan plan = quick ? kQuick : kFull;
  const std::string json_path = out_dir + "/results.json", bench = find_bench(bench_path);
  std::fprintf(stderr, "pkeyctl bench: running %s%s: %d repetitions of each case, at least %s s each\n",
               bench.c_str(), quick ? " --quick" : "", plan.repetitions, plan.min_time);
  std::vector<std::string> args = {bench,
                                   "--benchmark_format=json",
                                   "--benchmark_out_format=json",
                                   "--benchmark_out=" + json_path,
                                   "--benchmark_repetitions=" + std::to_string(plan.repetitions),
                                   std::string("--benchmark_min_time=") + plan.min_time};
  if (quick) args.insert(args.begin() + 1, "--quick");
  if (const int r = run_program(args, /*quiet=*/false); r != 0) {
    std::fprintf(stderr, "pkeyctl bench: %s %s (status %d)\n", bench.c_str(),
                 r == 127 ? "could not be run" : r > 128 ? "was killed by a signal" : "failed", r);
    return 1;
  }
  std::ifstream in(json_path);
  std::stringstream text;
  text << in.rdbuf();
  int repetitions = plan.repetitions;
  const std::vector<Result> results = parse_results(text.str(), &repetitions);
  if (results.empty()) {
    std::fprintf(stderr, "pkeyctl bench: %s holds no results\n", json_path.c_str());
    return 1;
  }

  const std::string plots_missing = plot(out_dir, results);
  const std::string report = out_dir + "/report.md";
  std::ofstream md(report);
  write_report(md, results, repetitions, plan, quick, plots_missing);
  md.close();
  if (!md) {
    std::fprintf(stderr, "pkeyctl bench: cannot write %s\n", report.c_str());
    return 1;
  }
  if (!plots_missing.empty()) {
    std::fprintf(stderr, "pkeyctl bench: plots skipped: %s\n", plots_missing.c_str());
    std::printf("pkeyctl bench: wrote %s (table only)\n", report.c_str());
    // An installed gnuplot that fails is a failure; a missing one is not.
    return plots_missing.rfind("gnuplot failed", 0) == 0 ? 1 : 0;
  }
  std::printf("pkeyctl bench: wrote %s with 3 plots\n", report.c_str());
  return 0;
}

}  // namespace pkeyctl
