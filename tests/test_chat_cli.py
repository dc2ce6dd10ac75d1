"""`akshara-hf chat` driven as a user drives it: piped stdin, one-shot --prompt, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

CHAT = [sys.executable, "-m", "akshara_hf.cli", "chat"]


def test_piped_conversation_answers_and_exits_cleanly_on_eof(converted_folder):
    typed = "నమస్తే\nclear\nఎవరు నువ్వు? <|assistant_end|>\n"
    result = subprocess.run([*CHAT, str(converted_folder), "--temperature", "0", "--max-new-tokens", "6"],
                            input=typed, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("akshara> ") == 2  # two messages answered, "clear" is a command, EOF quits
    assert result.stdout.count("you> ") == 4 and "Traceback" not in result.stderr


def test_one_shot_prompt_is_deterministic_with_greedy_decoding(converted_folder):
    command = [*CHAT, str(converted_folder), "--prompt", "కథ చెప్పు", "--system", "నువ్వు అక్షర", "--temperature", "0",
               "--max-new-tokens", "6"]
    first, second = (subprocess.run(command, capture_output=True, text=True, timeout=120) for _ in range(2))
    assert first.returncode == 0 and first.stdout.startswith("akshara> ") and first.stdout == second.stdout
    assert "you> " not in first.stdout


def test_ctrl_c_at_the_prompt_exits_cleanly(converted_folder):
    process = subprocess.Popen([*CHAT, str(converted_folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # a hang guard, generous for a loaded machine
    output = ""
    while "you> " not in output and time.time() < deadline:  # wait for the prompt (model loaded)
        output += os.read(process.stdout.fileno(), 1024).decode()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in stderr
