// Keyboard shortcuts: 1–6 pick an interval, Esc resets the view, ? shows the help overlay
// (`help`, a <dialog>). Keys typed into a form field, or with a modifier, are left alone.

export function installShortcuts({ help, intervals, onInterval, onReset }) {
  const typing = (el) => el instanceof HTMLElement && (el.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName));
  document.addEventListener('keydown', (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.defaultPrevented || typing(ev.target)) return;
    // The open dialog handles its own Esc (it closes).
    if (help.open) return;
    const n = Number(ev.key);
    if (Number.isInteger(n) && n >= 1 && n <= intervals.length) {
      onInterval(intervals[n - 1]);
    } else if (ev.key === 'Escape') {
      onReset();
    } else if (ev.key === '?') {
      help.showModal();
    } else {
      return;
    }
    ev.preventDefault();
  });
  // A click on the backdrop (outside the dialog's box) closes it too.
  help.addEventListener('click', (ev) => {
    if (ev.target === help) help.close();
  });
}
