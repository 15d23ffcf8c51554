// SPDX-License-Identifier: MIT
// pkeyctl bench: runs pkeys_bench and writes a report (Markdown) with plots
// (gnuplot, PNG) of the switch cost against region size and of the scaling
// with threads and virtual keys, naming the machine and backend.
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "pkeys/pkeys.h"

namespace pkeyctl {
namespace {

struct Result {
  std::string name;
  double real_ns = 0;
  bool error = false;
  std::map<std::string, double> counters;
};

// The number after `"key": ` in `obj`, if present.
bool number_field(const std::string& obj, const std::string& key, double* out) {
  const auto at = obj.find("\"" + key + "\": ");
  if (at == std::string::npos) return false;
  *out = std::strtod(obj.c_str() + at + key.size() + 4, nullptr);
  return true;
}

// Google Benchmark's JSON output: a flat object per benchmark.
std::vector<Result> parse_results(const std::string& json) {
  std::vector<Result> out;
  std::size_t at = json.find("\"benchmarks\"");
  while ((at = json.find("\"name\": \"", at)) != std::string::npos) {
    const std::size_t next = json.find("\"name\": \"", at + 1);
    const std::string obj = json.substr(at, next == std::string::npos ? std::string::npos : next - at);
    Result r;
    r.name = obj.substr(9, obj.find('"', 9) - 9);
    r.error = obj.find("\"error_occurred\": true") != std::string::npos;
    double t = 0;
    if (number_field(obj, "real_time", &t)) {
      const bool us = obj.find("\"time_unit\": \"us\"") != std::string::npos;
      r.real_ns = us ? t * 1000 : t;
    }
    for (const char* c : {"x_mprotect", "x_wrpkru", "x_pkey_set", "mprotect_ns", "speedup_vs_mprotect"}) {
      double v;
      if (number_field(obj, c, &v)) r.counters[c] = v;
    }
    out.push_back(r);
    at = next == std::string::npos ? json.size() : next;
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
  const auto at = name.find(arg + ":");
  return at == std::string::npos ? -1 : std::atol(name.c_str() + at + arg.size() + 1);
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

// Runs a program (from PATH) with its stdout, and with `quiet` its stderr,
// discarded; its exit status, or 128 + signal.
int run_program(std::vector<std::string> args, bool quiet) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    if (quiet) std::freopen("/dev/null", "w", stderr);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "pkeyctl bench: cannot run %s: %s\n", args[0].c_str(), std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run_bench(const std::string& bench, const std::string& json_path, bool quick) {
  std::vector<std::string> args = {bench, "--benchmark_format=json", "--benchmark_out_format=json",
                                   "--benchmark_out=" + json_path};
  if (quick) args.push_back("--benchmark_min_time=0.02");
  return run_program(args, false);
}

// Writes `rows` (x y...) to DIR/NAME.dat.
void write_data(const std::string& path, const std::vector<std::vector<double>>& rows) {
  std::ofstream out(path);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) out << (i ? " " : "") << row[i];
    out << "\n";
  }
}

}  // namespace

int bench(int argc, char** argv) {
  std::string out_dir = "pkeys-bench-report", bench_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
      bench_path = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: pkeyctl bench [--out DIR] [--bench PATH] [--quick]\n\n"
          "Runs pkeys_bench and writes DIR/report.md (default DIR: pkeys-bench-report)\n"
          "with plots made by gnuplot: switch cost against region size, the\n"
          "cross-thread handshake against thread count, and random domain switches\n"
          "against the number of virtual keys, each beside plain mprotect. The\n"
          "report names the machine and the backend (PKEYS_BACKEND chooses it).\n"
          "--quick shortens each measurement (for smoke tests; figures are noisy).\n\n"
          "Exit status: 0 report written, 1 the benchmark or gnuplot failed, 2 usage.\n");
      return 0;
    } else {
      std::fprintf(stderr, "pkeyctl bench: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "pkeyctl bench: cannot create %s: %s\n", out_dir.c_str(), ec.message().c_str());
    return 1;
  }
  const std::string json_path = out_dir + "/results.json";
  if (int r = run_bench(find_bench(bench_path), json_path, quick); r != 0) {
    std::fprintf(stderr, "pkeyctl bench: pkeys_bench failed (status %d)\n", r);
    return 1;
  }
  std::ifstream in(json_path);
  std::stringstream text;
  text << in.rdbuf();
  const std::vector<Result> results = parse_results(text.str());

  // Plot data.
  std::map<long, std::vector<double>> by_size;  // pages -> raw, emulated, pku
  std::vector<std::vector<double>> threads, domains;
  for (const Result& r : results) {
    if (r.error) continue;
    const long pages = arg_of(r.name, "pages");
    if (pages > 0 && r.name.find("ranges:64") == std::string::npos) {
      auto& row = by_size[pages];
      row.resize(3, -1);
      const int column = r.name.rfind("BM_RawMprotectToggle/", 0) == 0 ? 0
                         : r.name.rfind("BM_EmulatedSwitch/", 0) == 0  ? 1
                         : r.name.rfind("BM_PkuSwitchBySize/", 0) == 0 ? 2
                                                                        : -1;
      if (column >= 0) row[static_cast<std::size_t>(column)] = r.real_ns;
    }
    if (r.name.rfind("BM_SyncThreadsRoundTrip/", 0) == 0)
      threads.push_back({static_cast<double>(arg_of(r.name, "threads")), r.real_ns / 1000});
    if (r.name.rfind("BM_VKeyRandomSwitch/", 0) == 0)
      domains.push_back({static_cast<double>(arg_of(r.name, "domains")), r.real_ns, r.counters.count("mprotect_ns") ? r.counters.at("mprotect_ns") : -1});
  }
  std::vector<std::vector<double>> sizes;
  for (auto& [pages, row] : by_size) sizes.push_back({pages * 4.0, row[0], row[1], row[2]});
  write_data(out_dir + "/switch_by_size.dat", sizes);
  write_data(out_dir + "/threads.dat", threads);
  write_data(out_dir + "/vkeys.dat", domains);

  const std::string plot = out_dir + "/plots.gp";
  {
    std::ofstream gp(plot);
    gp << "set terminal pngcairo size 800,500\nset logscale xy\nset grid\nset key top left\nset datafile missing '-1'\n"
       << "cd '" << std::filesystem::absolute(out_dir).string() << "'\n"
       << "set output 'switch_by_size.png'\nset title 'One rights switch (set, then set back) by region size'\n"
       << "set xlabel 'region size (KiB)'\nset ylabel 'ns'\n"
       << "plot 'switch_by_size.dat' using 1:2 with linespoints title 'raw mprotect toggle', "
          "'' using 1:3 with linespoints title 'pkeys, emulated', '' using 1:4 with linespoints title 'pkeys, x86-pku'\n"
       << "set output 'threads.png'\nset title 'Cross-thread rights handshake (pkeys\\_sync\\_threads)'\n"
       << "set xlabel 'other threads'\nset ylabel 'us per call'\n"
       << "plot 'threads.dat' using 1:2 with linespoints title 'round trip'\n"
       << "set output 'vkeys.png'\nset title 'Random domain switches (open, write a byte, close)'\n"
       << "set xlabel 'virtual keys (domains)'\nset ylabel 'ns per switch'\n"
       << "plot 'vkeys.dat' using 1:2 with linespoints title 'pkeys virtual keys', "
          "'' using 1:3 with linespoints title 'mprotect alone'\n";
  }
  if (run_program({"gnuplot", plot}, /*quiet=*/true) != 0) {
    std::fprintf(stderr, "pkeyctl bench: gnuplot failed (install gnuplot-nox); data is in %s\n", out_dir.c_str());
    return 1;
  }

  utsname u{};
  ::uname(&u);
  std::ofstream md(out_dir + "/report.md");
  md << "# pkeys benchmark report\n\n"
     << "- machine: " << cpu_model() << ", " << ::sysconf(_SC_NPROCESSORS_ONLN) << " CPUs, Linux " << u.release
     << "\n- backend: " << pkeys_backend() << " (" << pkeys_backend_reason() << ")\n"
     << "- pkeys_bench" << (quick ? " --quick (short runs: figures are noisy)" : "") << "\n\n"
     << "![switch cost by region size](switch_by_size.png)\n\n![handshake by threads](threads.png)\n\n"
     << "![random domain switches](vkeys.png)\n\n"
     << "| benchmark | real time (ns) | vs raw mprotect | vs WRPKRU pair |\n|---|---|---|---|\n";
  char cell[64];
  for (const Result& r : results) {
    md << "| " << r.name << " | ";
    if (r.error) {
      md << "skipped | | |\n";
      continue;
    }
    std::snprintf(cell, sizeof cell, "%.1f", r.real_ns);
    md << cell << " | ";
    for (const char* c : {"x_mprotect", "x_wrpkru"}) {
      if (r.counters.count(c)) {
        std::snprintf(cell, sizeof cell, "%.3f", r.counters.at(c));
        md << cell;
      }
      md << " | ";
    }
    md << "\n";
  }
  std::printf("pkeyctl bench: wrote %s/report.md with 3 plots\n", out_dir.c_str());
  return 0;
}

}  // namespace pkeyctl
