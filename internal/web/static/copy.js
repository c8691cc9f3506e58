// Keyward portal: the Copy button, the portal's only script. Pages work without it; with it,
// each button[data-copy] (hidden until now) copies its value to the clipboard and says so.
(function () {
  "use strict";
  if (!navigator.clipboard || !window.isSecureContext) {
    return; // no clipboard access here: the buttons stay hidden, the key is still on screen
  }
  var buttons = document.querySelectorAll("button[data-copy]");
  Array.prototype.forEach.call(buttons, function (button) {
    var label = button.textContent;
    var status = document.getElementById(button.getAttribute("data-copy-status") || "");
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
        button.textContent = "Copied";
        if (status) { status.textContent = "Recovery key copied to the clipboard."; }
        window.setTimeout(function () { button.textContent = label; }, 2000);
      }, function () {
        if (status) { status.textContent = "Copying failed: select the key and copy it by hand."; }
      });
    });
  });
})();
