"""experiments/build_corpus.py: the parsers of the held-out sources, offline."""
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "build_corpus.py")
_spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)


def test_email_keeps_the_authors_prose_only():
  body = (
      "I tried the new kernel last night and the sound card works again.\n"
      "It was the module option after all, thanks for the hint.\n"
      "\n"
      "On Tue, 3 Sep 2002, Bob wrote:\n"
      "> Did you try the module option that the manual mentions?\n"
      "> It fixed the same problem on my laptop.\n"
      "\n"
      "Next I will look at why the network card drops its link sometimes.\n"
      "\n"
      "ok\n"
      "-- \n"
      "Alice, who signs every message with a long and witty quotation here\n")
  assert bc.email_paragraphs(body) == [
      "I tried the new kernel last night and the sound card works again. "
      "It was the module option after all, thanks for the hint.",
      "Next I will look at why the network card drops its link sometimes.",
  ]


def test_email_stops_at_a_list_footer():
  body = ("The meeting moved to Thursday at noon in the small room.\n\n"
          "_______________________________________________\n"
          "Some-list mailing list: send a message to unsubscribe from it\n")
  assert bc.email_paragraphs(body) == [
      "The meeting moved to Thursday at noon in the small room."]


def test_pod_formatting_codes_become_text():
  pod = ("Use C<sprintf> or C<< $x->{y} >> with B<care>; see L<perlop|perlop/\"Ops\"> "
         "and L<perlfunc>, where E<lt>E<gt> is X<index>described.")
  assert bc.pod_text(pod) == (
      "Use sprintf or $x->{y} with care; see perlop and perlfunc, where <> is described.")


def test_an_unknown_source_is_a_one_line_error(tmp_path):
  r = subprocess.run([sys.executable, SCRIPT, "--sources=sotu,nosuch",
                      f"--output_dir={tmp_path}"], capture_output=True, text=True)
  assert r.returncode != 0
  assert r.stderr.strip().splitlines() == [
      "error: unknown source(s) nosuch; choose from " + ", ".join(bc.ALL)
      + " (or 'heldout')"]
  assert not any(tmp_path.iterdir())


def test_a_failed_fetch_is_a_one_line_error(tmp_path):
  env = dict(os.environ, PATH=str(tmp_path / "no_tools"))  # No apt-get, npm or pip.
  r = subprocess.run([sys.executable, SCRIPT, "--sources=python_docs",
                      f"--output_dir={tmp_path / 'out'}", f"--cache_dir={tmp_path / 'cache'}"],
                     capture_output=True, text=True, env=env)
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: could not fetch apt package python3.11-doc 3.11.2-6+deb12u9"), r.stderr
